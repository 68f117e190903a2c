// Step 1: a TCP server that prints every line its clients send.
//
// Run it with `go run ./step1-echo` and connect from other terminals with
// `go run ./netcat`. Every line you type appears on the server's standard
// output, after the address it came from. Nothing is sent back.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"io"
	"log"
	"net"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode"
)

// maxLine is the longest line a client may send, in bytes, counting its
// line ending. Without a limit one client could make the server buffer an
// endless line until it runs out of memory.
const maxLine = 4096

func main() {
	addr := flag.String("addr", "localhost:8000", "address to listen on")
	flag.Parse()

	// Ctrl-C (SIGINT) or SIGTERM cancels ctx; serve then closes every
	// connection and returns, and the program exits normally.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	log.Printf("listening on %s", ln.Addr())
	if err := serve(ctx, ln, os.Stdout); err != nil {
		log.Fatal(err)
	}
}

// serve accepts connections on ln until ctx is cancelled, and returns once
// every connection it accepted is closed. Each connection gets a goroutine
// of its own, so a client that is slow to send never holds up the others.
func serve(ctx context.Context, ln net.Listener, out io.Writer) error {
	p := &printer{w: out}
	var conns sync.WaitGroup
	defer conns.Wait()
	// Closing the listener is the way to end a blocked Accept.
	stopAccepting := context.AfterFunc(ctx, func() { ln.Close() })
	defer stopAccepting()
	for {
		conn, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil // we closed the listener: a normal stop
			}
			if errors.Is(err, net.ErrClosed) {
				return err // someone else closed it: nothing left to accept
			}
			// Other errors (out of file descriptors, a connection reset
			// before we took it) are passing troubles, not a reason to stop
			// serving everyone. Pause a little so they cannot spin the CPU.
			log.Printf("accept: %v", err)
			time.Sleep(acceptRetryDelay)
			continue
		}
		conns.Go(func() { handleConn(ctx, conn, p) })
	}
}

// acceptRetryDelay is how long serve waits after a failed Accept.
const acceptRetryDelay = 50 * time.Millisecond

// handleConn prints every line the client sends until it hangs up, sends a
// line longer than maxLine, or the server stops.
func handleConn(ctx context.Context, conn net.Conn, p *printer) {
	defer conn.Close()
	// When the server stops, closing the connection ends the Scan below.
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()

	who := conn.RemoteAddr().String()
	log.Printf("%s connected", who)
	input := newScanner(conn)
	for input.Scan() {
		p.println(who + ": " + sanitize(input.Text()))
	}
	log.Printf("%s disconnected%s", who, why(input.Err()))
}

// newScanner reads conn line by line. bufio.ScanLines drops the "\r" of a
// "\r\n" ending, so telnet and Windows clients work too. The buffer starts
// small and grows only as far as maxLine: an idle client costs little.
func newScanner(conn net.Conn) *bufio.Scanner {
	input := bufio.NewScanner(conn)
	input.Buffer(make([]byte, 0, 512), maxLine)
	return input
}

// why explains, for the log, how a client's input ended.
func why(err error) string {
	switch {
	case err == nil:
		return "" // the client hung up
	case errors.Is(err, bufio.ErrTooLong):
		return ": line too long"
	default:
		return ": " + err.Error()
	}
}

// sanitize makes client text safe to print on a terminal. Invalid UTF-8
// becomes U+FFFD, and so does every control character: ESC starts the
// sequences that recolour the screen, move the cursor or retitle the
// window, BEL beeps, CR overwrites the line, and so on.
func sanitize(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	return strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return '\uFFFD'
		}
		return r
	}, s)
}

// printer writes whole lines to w, one at a time, so that lines from
// concurrent connections never interleave mid-line.
type printer struct {
	mu sync.Mutex
	w  io.Writer
}

func (p *printer) println(line string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, err := io.WriteString(p.w, line+"\n"); err != nil {
		log.Printf("printing: %v", err)
	}
}
