// Step 5: the chat in the browser. TCP lines become WebSocket frames of
// JSON, and the room remembers its last messages for newcomers.
//
// Run it with `go run ./step5-websocket`, and open http://localhost:8080/ in
// two browser tabs. This file is the lesson; web.go is step 5's plumbing;
// the others hold what every step shares (see docs/shared.md).
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"log"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"golang.org/x/net/websocket"
)

func main() {
	addr := flag.String("addr", "localhost:8080", "address to listen on")
	idle := flag.Duration("idle", 5*time.Minute, "disconnect clients silent for this long")
	history := flag.Int("history", 100, "how many messages newcomers are shown")
	origin := flag.String("origin", "", "another origin allowed to connect, e.g. https://example.com")
	maxConns := flag.Int("maxconns", 2000, "how many WebSockets may be open at once")
	flag.Parse()
	if *idle <= 0 || *history < 0 || *maxConns <= 0 {
		log.Fatal("-idle and -maxconns must be positive and -history not negative")
	}
	// Ctrl-C (SIGINT) or SIGTERM cancels ctx, which tells serve to stop.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	log.Printf("listening on http://%s/", ln.Addr())
	if err := serve(ctx, ln, *idle, *history, *origin, *maxConns); err != nil {
		log.Fatal(err)
	}
}

// serve serves the page and the chat on ln until ctx is cancelled. net/http
// runs the accept loop, and each request in a goroutine of its own: for a
// WebSocket, that goroutine runs handleConn.
func serve(ctx context.Context, ln net.Listener, idle time.Duration, history int, origin string, maxConns int) error {
	r := newRoom()
	stopped := make(chan struct{}) // closed by the broadcaster when it is done
	go r.broadcaster(stopped, history)
	// Step 4's cap on connections, its WaitGroup (waitConns) and its idle
	// rule (in tcpConn) are in newServer now: see web.go.
	srv, waitConns := newServer(ctx, origin, idle, maxConns, func(ws *websocket.Conn) { r.handleConn(ctx, ws) })
	defer func() {
		waitConns()       // every client has left the room,
		close(r.messages) // so the broadcaster can stop,
		<-stopped         // and serve returns once it has.
	}()
	// Once ctx is cancelled, close the server: that ends Serve.
	stopServing := context.AfterFunc(ctx, func() { srv.Close() })
	defer stopServing()
	if err := srv.Serve(ln); ctx.Err() == nil {
		return err // the listener failed
	}
	return nil // we closed the server: a normal stop
}

// room is how the connections' goroutines talk to the broadcaster.
type room struct {
	entering chan *client
	messages chan string // encoded; closed by serve once every client is gone
	exits    chan exit   // the exit queue: every way out goes through it
}

func newRoom() *room {
	return &room{
		entering: make(chan *client),
		messages: make(chan string),
		exits:    make(chan exit),
	}
}

// message is what frames carry. The server sets the author, so nobody can
// speak as someone else; its own notices have an event instead (see docs).
type message struct {
	Author string   `json:"author"`
	Body   string   `json:"body"`
	Event  string   `json:"event,omitempty"`
	Time   string   `json:"time"`           // when the server encoded it
	Here   []string `json:"here,omitempty"` // a welcome's: who else is in
}

// encode turns m into JSON and a comma, once for all its readers (wsConn, web.go).
func encode(m message) string {
	m.Time = time.Now().UTC().Format(time.RFC3339)
	b, _ := json.Marshal(m) // never fails: strings only
	return string(append(b, ','))
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

// maxHistory bounds the history's bytes, as JSON: half an outbox, so that
// a newcomer's takes all of it, with room for what is said meanwhile.
const maxHistory = maxPending / 2

// broadcaster is the only goroutine that touches the set of clients, so the
// set needs no lock: the others ask for changes through the room's channels,
// and it handles one request at a time. Newcomers get the last keep messages.
func (r *room) broadcaster(stopped chan<- struct{}, keep int) {
	defer close(stopped)
	clients := make(map[string]*client)
	var history []string // the last messages, oldest first, within maxHistory
	size := 0            // the bytes in history
	var here []byte      // who is in, for welcomes: "ana","bob", (nil: list them again)
	for {
		select {
		case cli := <-r.entering:
			_, taken := clients[cli.name]
			if !taken {
				// Greeting, announcing and registering are one step, so the
				// newcomer gets all that is said after its greeting, and
				// never its own arrival.
				if here == nil {
					here = []byte{}
					for name := range clients {
						here = appendName(here, name)
					}
				}
				cli.out.put(welcome(cli.name, here))
				for _, msg := range history {
					cli.out.put(msg) // fits: the outbox takes maxPending bytes
				}
				broadcast(clients, encode(message{Event: "arrived", Body: cli.name}))
				clients[cli.name] = cli
				here = appendName(here, cli.name)
			}
			cli.admitted <- !taken
		case msg, ok := <-r.messages:
			if !ok {
				return
			}
			history = append(history, msg)
			size += len(msg)
			for len(history) > keep || size > maxHistory {
				size -= len(history[0])
				history = history[1:] // append copies the rest when it regrows
			}
			broadcast(clients, msg)
		case ex := <-r.exits:
			guide(clients, ex)
			here = nil // maybe one fewer: list them again at the next welcome
		}
	}
}

// welcome greets a newcomer with the names of who else is in: here, which
// the broadcaster keeps encoded, so that in a room of 5,000 a join costs
// no more than in a room of 5 (docs/performance.md says why that matters).
func welcome(name string, here []byte) string {
	m := encode(message{Event: "welcome", Body: name}) // {...},
	return m[:len(m)-2] + `,"here":[` + string(bytes.TrimSuffix(here, []byte(","))) + "]},"
}

// appendName adds name to here, as JSON and a comma.
func appendName(here []byte, name string) []byte {
	b, _ := json.Marshal(name) // never fails: a string
	return append(append(here, b...), ',')
}

// guide is the exit guide: every way out ends here, in the broadcaster, so
// whatever made a client leave, and however many of those happen at once,
// it is told why, removed and announced exactly once.
func guide(clients map[string]*client, ex exit) {
	if ex.reason != "" {
		ex.cli.out.put(encode(message{Event: "bye", Body: ex.reason}))
	}
	ex.cli.out.close()                  // its writer sends what is left, then hangs up
	if clients[ex.cli.name] == ex.cli { // not so for a client still at the prompt
		delete(clients, ex.cli.name)
		broadcast(clients, encode(message{Event: "left", Body: ex.cli.name}))
	}
}

// broadcast queues msg, encoded, for every client, and never waits for one.
// A client too far behind is disconnected, and then takes the exit queue.
func broadcast(clients map[string]*client, msg string) {
	for _, cli := range clients {
		if !cli.out.put(msg) {
			log.Printf("%s: over %d bytes behind, disconnecting", cli.name, maxPending)
			cli.out.close()
			// Not Close, whose close frame would wait behind the stuck write,
			// stalling the room: a past deadline fails that write now (or, if
			// the writer is between writes, its next, within writeTimeout).
			cli.conn.SetWriteDeadline(time.Now())
		}
	}
}

// handleConn runs one client: it starts the client's writer, takes its
// name, hands every message the client sends to the broadcaster, and leaves.
func (r *room) handleConn(ctx context.Context, ws *websocket.Conn) {
	cli := &client{conn: wsConn{ws}, out: newOutbox(), admitted: make(chan bool)}
	written := make(chan struct{}) // closed by the writer when it is done
	go cli.writer(written)
	defer func() { <-written }()
	// Once ctx is cancelled, say goodbye: the writer sends it, then closes
	// the connection, which ends the Scan.
	stop := context.AfterFunc(ctx, func() {
		cli.out.put(encode(message{Event: "bye", Body: "server is shutting down"}))
		cli.out.close()
	})
	defer stop()
	input := &frames{ws: ws}
	limit := newLimiter() // flood control: see limit.go
	if r.join(cli, input) {
		for input.Scan() && strings.TrimSpace(input.Text()) != "/quit" && limit.Wait(ctx) == nil {
			r.messages <- encode(message{Author: cli.name, Body: sanitize(input.Text())})
		}
	}
	r.exits <- exit{cli, farewell(input.Err())}
}

// farewell is what a leaving client is told, given how its input ended.
func farewell(err error) string {
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		return "idle timeout"
	case errors.As(err, new(badFrame)):
		return err.Error()
	default:
		return "" // it hung up, said /quit, or was disconnected
	}
}

// join waits for a name until the client gives a valid one that nobody in
// the room uses, and enters the room with it; false if the input ends first.
// A client slow to answer holds up nobody: join runs in its own goroutine.
func (r *room) join(cli *client, input *frames) bool {
	for {
		if !input.Scan() {
			return false
		}
		var err error
		if cli.name, err = checkName(input.Text()); err != nil {
			cli.out.put(encode(message{Event: "refused", Body: err.Error()}))
			continue
		}
		// Only the broadcaster knows which names are in use: ask it, and
		// wait for its answer.
		r.entering <- cli
		if <-cli.admitted {
			return true
		}
		cli.out.put(encode(message{Event: "refused", Body: "name is taken"}))
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
