// Step 4: every way out of the chat goes through one exit queue.
//
// Run it with `go run ./step4-exit-queue`, and `go run ./netcat` in other
// terminals. This file is the lesson; the others hold what every step
// shares (see docs/shared.md).
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"
)

func main() {
	addr := flag.String("addr", "localhost:8000", "address to listen on")
	idle := flag.Duration("idle", 5*time.Minute, "disconnect clients that send no line for this long")
	maxConns := flag.Int("maxconns", 2000, "most connections at once; more are refused")
	flag.Parse()
	if *idle <= 0 || *maxConns <= 0 {
		log.Fatal("-idle and -maxconns must be positive")
	}
	// Ctrl-C (SIGINT) or SIGTERM cancels ctx, which tells serve to stop.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	log.Printf("listening on %s", ln.Addr())
	if err := serve(ctx, ln, *idle, *maxConns); err != nil {
		log.Fatal(err)
	}
}

// serve handles each connection on ln in a goroutine of its own, at most
// maxConns at once, until ctx is cancelled.
func serve(ctx context.Context, ln net.Listener, idle time.Duration, maxConns int) error {
	r := newRoom(idle)
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
	seats := make(chan struct{}, maxConns) // a token per connection being handled
	for {
		conn, err := accept(ln)
		if err != nil {
			if ctx.Err() != nil {
				return nil // we closed the listener: a normal stop
			}
			return err
		}
		select {
		case seats <- struct{}{}:
		default: // maxConns connections already: refuse this one
			log.Printf("%s: refused: server is full", conn.RemoteAddr())
			// A new connection's socket has room for a line: this never waits.
			io.WriteString(conn, "server is full\n") // fails only if it has gone
			conn.Close()
			continue
		}
		conns.Add(1)
		go func() {
			defer conns.Done()
			r.handleConn(ctx, conn)
			<-seats
		}()
	}
}

// room is how the connections' goroutines talk to the broadcaster.
type room struct {
	entering chan *client
	messages chan string // closed by serve once every client is gone
	exits    chan exit   // the exit queue: every way out goes through it
	idle     time.Duration
}

func newRoom(idle time.Duration) *room {
	return &room{
		entering: make(chan *client),
		messages: make(chan string),
		exits:    make(chan exit),
		idle:     idle,
	}
}

// exit is a client on its way out, and what to tell it ("" for nothing).
type exit struct {
	cli    *client
	reason string
}

// client is one connection, as the broadcaster sees it.
type client struct {
	name     string // what the others call it
	conn     net.Conn
	out      *outbox   // output waiting for the client's writer
	admitted chan bool // the broadcaster's answer to entering: is the name free?
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
			_, taken := clients[cli.name]
			if !taken {
				// Greeting, announcing and registering are one step, so the
				// newcomer gets all that is said after its greeting, and
				// never its own arrival.
				cli.out.put("welcome " + cli.name + "\n")
				broadcast(clients, cli.name+" has arrived")
				clients[cli.name] = cli
			}
			cli.admitted <- !taken
		case msg, ok := <-r.messages:
			if !ok {
				return
			}
			broadcast(clients, msg)
		case ex := <-r.exits:
			guide(clients, ex)
		}
	}
}

// guide is the exit guide: every way out ends here, in the broadcaster, so
// whatever made a client leave, and however many of those happen at once,
// it is told why, removed and announced exactly once.
func guide(clients map[string]*client, ex exit) {
	if ex.reason != "" {
		ex.cli.out.put(ex.reason + "\n")
	}
	ex.cli.out.close()                  // its writer sends what is left, then hangs up
	if clients[ex.cli.name] == ex.cli { // not so for a client still at the prompt
		delete(clients, ex.cli.name)
		broadcast(clients, ex.cli.name+" left the chat")
	}
}

// broadcast queues line for every client, and never waits for one. A client
// too far behind is disconnected, and then takes the exit queue.
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

// handleConn runs one client: it starts the client's writer, asks for a
// name, hands every line the client sends to the broadcaster, and leaves.
func (r *room) handleConn(ctx context.Context, conn net.Conn) {
	cli := &client{conn: conn, out: newOutbox(), admitted: make(chan bool)}
	written := make(chan struct{}) // closed by the writer when it is done
	go cli.writer(written)
	defer func() { <-written }()
	// Once ctx is cancelled, say goodbye: the writer sends it, then closes
	// the connection, which ends the Scan.
	stop := context.AfterFunc(ctx, func() {
		cli.out.put("server is shutting down\n")
		cli.out.close()
	})
	defer stop()
	input := idleLines{newScanner(conn), conn, r.idle}
	limit := newLimiter() // flood control: see limit.go
	if r.join(cli, input) {
		for input.Scan() && strings.TrimSpace(input.Text()) != "/quit" && limit.Wait(ctx) == nil {
			r.messages <- cli.name + " says: " + sanitize(input.Text())
		}
	}
	r.exits <- exit{cli, farewell(input.Err())}
}

// farewell is what a leaving client is told, given how its input ended.
func farewell(err error) string {
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		return "idle timeout"
	case errors.Is(err, bufio.ErrTooLong):
		return fmt.Sprintf("line too long (max %d bytes)", maxLine)
	default:
		return "" // it hung up, said /quit, or was disconnected
	}
}

// idleLines is a client's input, line by line: Scan fails once the client
// has sent no whole line for idle. The clock restarts at each line, not at
// each byte, so a byte now and then does not keep a client in.
type idleLines struct {
	*bufio.Scanner
	conn net.Conn
	idle time.Duration
}

func (in idleLines) Scan() bool {
	in.conn.SetReadDeadline(time.Now().Add(in.idle)) // fails only if closed; Scan then fails too
	return in.Scanner.Scan()
}

// join asks for a name until the client gives a valid one that nobody in
// the room uses, and enters the room with it; false if the input ends first.
// A client slow to answer holds up nobody: join runs in its own goroutine.
func (r *room) join(cli *client, input idleLines) bool {
	for {
		cli.out.put("Enter your username: ")
		if !input.Scan() {
			return false
		}
		var err error
		if cli.name, err = checkName(input.Text()); err != nil {
			cli.out.put(err.Error() + "\n")
			continue
		}
		// Only the broadcaster knows which names are in use: ask it, and
		// wait for its answer.
		r.entering <- cli
		if <-cli.admitted {
			return true
		}
		cli.out.put("name is taken\n")
	}
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
