// Step 2: a chat room. Every line a client sends reaches every client.
//
// Run it with `go run ./step2-broadcast`, and `go run ./netcat` in other
// terminals. This file is the lesson; the others hold what every step
// shares (see docs/shared.md).
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
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
	if err := serve(ctx, ln); err != nil {
		log.Fatal(err)
	}
}

// serve handles each connection on ln in a goroutine of its own, until
// ctx is cancelled.
func serve(ctx context.Context, ln net.Listener) error {
	r := newRoom()
	stopped := make(chan struct{}) // closed by the broadcaster when it is done
	go r.broadcaster(stopped)
	var conns sync.WaitGroup // the connections being handled
	defer func() {
		conns.Wait()      // every client has left the room,
		close(r.messages) // so the broadcaster can stop,
		<-stopped         // and serve returns once it has.
	}()
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
			r.handleConn(ctx, conn)
		}()
	}
}

// room is how the connections' goroutines talk to the broadcaster.
type room struct {
	entering chan *client
	messages chan string // closed by serve once every client is gone
	leaving  chan *client
}

func newRoom() *room {
	return &room{
		entering: make(chan *client),
		messages: make(chan string),
		leaving:  make(chan *client),
	}
}

// client is one connection, as the broadcaster sees it.
type client struct {
	name string // what the others call it: its address, for now
	conn net.Conn
	out  *outbox // output waiting for the client's writer
}

// broadcaster is the only goroutine that touches the set of clients, so the
// set needs no lock: the others ask for changes through the room's channels,
// and it handles one request at a time.
func (r *room) broadcaster(stopped chan<- struct{}) {
	defer close(stopped)
	clients := make(map[string]*client)
	for {
		select {
		case cli := <-r.entering:
			// Greeting, announcing and registering are one step, so the
			// newcomer gets all that is said after its greeting, and never
			// its own arrival.
			cli.out.put("You are " + cli.name + "\n")
			broadcast(clients, cli.name+" has arrived")
			clients[cli.name] = cli
		case msg, ok := <-r.messages:
			if !ok {
				return
			}
			broadcast(clients, msg)
		case cli := <-r.leaving:
			delete(clients, cli.name)
			cli.out.close() // its writer sends what is left, then hangs up
			broadcast(clients, cli.name+" has left")
		}
	}
}

// broadcast queues line for every client, and never waits for one. A client
// too far behind has stopped reading: it is disconnected (and then leaves).
func broadcast(clients map[string]*client, line string) {
	line += "\n"
	for _, cli := range clients {
		if !cli.out.put(line) {
			log.Printf("%s: over %d bytes behind, disconnecting", cli.name, maxPending)
			cli.out.close()
			cli.conn.Close()
		}
	}
}

// handleConn runs one client: it starts the client's writer, enters the
// room, hands every line the client sends to the broadcaster, and leaves.
func (r *room) handleConn(ctx context.Context, conn net.Conn) {
	cli := &client{name: conn.RemoteAddr().String(), conn: conn, out: newOutbox()}
	written := make(chan struct{}) // closed by the writer when it is done
	go cli.writer(written)
	defer func() { <-written }()
	// Once ctx is cancelled, close the connection: that ends the Scan.
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	input := newScanner(conn)
	limit := newLimiter() // flood control: see limit.go
	r.entering <- cli
	for input.Scan() && limit.Wait(ctx) == nil {
		r.messages <- cli.name + ": " + sanitize(input.Text())
	}
	if errors.Is(input.Err(), bufio.ErrTooLong) {
		cli.out.put(fmt.Sprintf("line too long (max %d bytes)\n", maxLine))
	}
	r.leaving <- cli
}

// writer is the only goroutine that writes to the client's connection. It
// sends everything waiting in the outbox with one write, until the outbox
// is closed and empty or a write fails; then it hangs up.
func (c *client) writer(written chan<- struct{}) {
	defer close(written)
	defer c.conn.Close() // which ends handleConn's Scan too
	for {
		batch, ok := c.out.take()
		if !ok {
			return
		}
		if err := send(c.conn, batch); err != nil {
			return
		}
	}
}
