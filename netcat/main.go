// netcat is a minimal TCP client for the chat steps: it copies standard
// input to the server and the server's output to standard output.
//
//	go run ./netcat -addr localhost:8000
//
// When standard input ends (Ctrl-D), it half-closes the connection and
// keeps printing until the server hangs up. When the server hangs up, it
// exits at once, without waiting for another line of input.
package main

import (
	"flag"
	"fmt"
	"io"
	"net"
	"os"
)

func main() {
	addr := flag.String("addr", "localhost:8000", "chat server address")
	flag.Parse()
	if err := run(*addr, os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "netcat:", err)
		os.Exit(1)
	}
}

// run connects to addr, then copies in to the server and the server to out
// until the server closes the connection.
func run(addr string, in io.Reader, out io.Writer) error {
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer conn.Close()

	// Input goes in its own goroutine: reading the terminal blocks, and it
	// must not keep us from printing, nor from exiting when the server
	// hangs up. If the process exits first, it simply ends with it.
	go func() {
		// An error here means the connection is gone; the copy below
		// notices that too, and reports it.
		if _, err := io.Copy(conn, in); err == nil {
			// Input ended: tell the server we are done sending, but keep
			// the connection open to read what it still has to say. This
			// fails only if the connection is gone, which is reported below.
			_ = conn.(*net.TCPConn).CloseWrite()
		}
	}()

	if _, err := io.Copy(out, conn); err != nil {
		return fmt.Errorf("reading from the server: %w", err)
	}
	return nil // the server closed the connection
}
