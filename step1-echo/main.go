// Step 1: a TCP server that prints every line its clients send.
//
// Run it with `go run ./step1-echo`, and `go run ./netcat` in other
// terminals. This file is the lesson; the others hold what every step
// shares (see docs/shared.md).
package main

import (
	"context"
	"flag"
	"io"
	"log"
	"net"
	"os"
	"os/signal"
	"sync"
	"syscall"
)

func main() {
	addr := flag.String("addr", "localhost:8000", "address to listen on")
	flag.Parse()
	// Ctrl-C (SIGINT) or SIGTERM cancels ctx, which tells serve to stop.
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

// serve handles each connection on ln in a goroutine of its own, until
// ctx is cancelled.
func serve(ctx context.Context, ln net.Listener, out io.Writer) error {
	p := &printer{w: out}
	var conns sync.WaitGroup // the connections being handled
	defer conns.Wait()       // serve returns once they all are closed
	// Once ctx is cancelled, close the listener: that ends accept.
	stopAccepting := context.AfterFunc(ctx, func() { ln.Close() })
	defer stopAccepting()
	for {
		conn, err := accept(ln)
		if err != nil {
			if ctx.Err() != nil {
				return nil // we closed the listener: a normal stop
			}
			return err
		}
		conns.Add(1)
		go func() {
			defer conns.Done()
			handleConn(ctx, conn, p)
		}()
	}
}

// handleConn prints the client's lines until it hangs up or ctx is done.
func handleConn(ctx context.Context, conn net.Conn, p *printer) {
	defer conn.Close()
	// Once ctx is cancelled, close the connection: that ends the Scan.
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	who := conn.RemoteAddr().String()
	log.Printf("%s connected", who)
	input := newScanner(conn)
	for input.Scan() {
		p.println(who + ": " + sanitize(input.Text()))
	}
	log.Printf("%s disconnected (%v)", who, input.Err()) // nil: it hung up
}

// printer writes whole lines to w, one at a time: lines from connections
// handled at once never mix.
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
