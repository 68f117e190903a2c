// Step 6: one room across many servers. Each server publishes what its
// clients say to one stream, in NATS, and delivers what the stream gives
// it, in the stream's order, to its own clients.
//
// Run it with `go run ./step6-cluster`: alone, it is step 5, with NATS
// inside. For three servers, see docs/step6-cluster.md. This file is the
// lesson; cluster.go is the NATS plumbing; the others are step 5's.
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

	"github.com/nats-io/nats.go"
	"golang.org/x/net/websocket"
)

func main() {
	addr := flag.String("addr", "localhost:8080", "address to listen on")
	idle := flag.Duration("idle", 5*time.Minute, "disconnect clients silent for this long")
	history := flag.Int("history", 100, "how many messages newcomers are shown")
	origin := flag.String("origin", "", "another origin allowed to connect, e.g. https://example.com")
	maxConns := flag.Int("maxconns", 2000, "how many WebSockets may be open at once")
	join := flag.String("nats", "", "join the NATS at this URL, e.g. nats://localhost:4222, instead of starting one")
	listen := flag.String("nats-listen", "", "let other servers join this one's NATS at this address, e.g. localhost:4222")
	store := flag.String("store", "", "where this one's NATS keeps the stream (default: a temporary directory)")
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
	nc, closeNATS, err := connectNATS(*join, *listen, *store) // see cluster.go
	if err != nil {
		log.Fatal(err)
	}
	log.Printf("listening on http://%s/", ln.Addr())
	err = serve(ctx, ln, *idle, *history, *origin, *maxConns, nc)
	closeNATS()
	if err != nil {
		log.Fatal(err)
	}
}

// serve serves the page and the chat on ln until ctx is cancelled, or NATS
// (nc) is lost. net/http runs the accept loop, and each request in a
// goroutine of its own: for a WebSocket, that goroutine runs handleConn.
func serve(ctx context.Context, ln net.Listener, idle time.Duration, history int, origin string, maxConns int, nc *nats.Conn) error {
	// A server that loses NATS has lost the room: fail ends ctx, with why.
	ctx, fail := context.WithCancelCause(ctx)
	defer fail(nil)
	c, err := openCluster(ctx, nc, history, fail) // the stream and the names
	if err != nil {
		return err
	}
	r := newRoom(c, fail)
	stopped := make(chan struct{}) // closed by the broadcaster when it is done
	go r.broadcaster(stopped, history)
	go r.follower()
	// Step 4's cap on connections, its WaitGroup (waitConns) and its idle
	// rule (in tcpConn) are in newServer now: see web.go.
	srv, waitConns := newServer(ctx, origin, idle, maxConns, func(ws *websocket.Conn) { r.handleConn(ctx, ws) })
	defer func() {
		waitConns() // every client has left the room,
		c.close()   // so the follower can stop, closing r.fromStream,
		<-stopped   // then the broadcaster, and serve returns once it has.
	}()
	// Newcomers are shown the history: wait until the follower has read all
	// the stream held when it started (cluster.go closes c.caughtUp then).
	select {
	case <-c.caughtUp:
	case <-ctx.Done():
	}
	// Once ctx is cancelled, close the server: that ends Serve.
	stopServing := context.AfterFunc(ctx, func() { srv.Close() })
	defer stopServing()
	if err := srv.Serve(ln); ctx.Err() == nil {
		return err // the listener failed
	}
	if err := context.Cause(ctx); !errors.Is(err, context.Canceled) {
		return err // NATS was lost
	}
	return nil // we closed the server: a normal stop
}

// room is how the connections' goroutines talk to the broadcaster.
type room struct {
	fromStream chan message // from the stream; closed by the follower when it stops
	exits      chan exit    // the exit queue: every way out goes through it
	cluster    *cluster     // the room in NATS: the stream and the names (cluster.go)
	fail       func(error)  // stops the server: it has lost NATS
}

func newRoom(c *cluster, fail func(error)) *room {
	return &room{
		fromStream: make(chan message),
		exits:      make(chan exit),
		cluster:    c,
		fail:       fail,
	}
}

// message is what frames carry. The server sets the author, so nobody can
// speak as someone else; its own notices have an event instead (see docs).
type message struct {
	Author string   `json:"author"`
	Body   string   `json:"body"`
	Event  string   `json:"event,omitempty"`
	Time   string   `json:"time"`           // when the stream stored it, or the server encoded it
	Here   []string `json:"here,omitempty"` // a welcome's: who else is in
	own    *client  // on an arrival or a departure, on the client's own server: who
}

// encode turns m into JSON and a comma, once for all its readers (wsConn, web.go).
func encode(m message) string {
	if m.Time == "" { // the stream's messages have its time, the same everywhere
		m.Time = time.Now().UTC().Format(time.RFC3339)
	}
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
	out      *outbox       // output waiting for the client's writer
	admitted chan struct{} // closed by the broadcaster at its arrival
	departed chan struct{} // closed by the broadcaster at its departure
}

// maxHistory bounds the history's bytes, as JSON: half an outbox, so that
// a newcomer's takes all of it, with room for what is said meanwhile.
const maxHistory = maxPending / 2

// broadcaster is the only goroutine that touches this server's set of
// clients, so the set needs no lock: the others ask for changes through the
// room's channels, and it handles one request at a time. What it broadcasts
// comes from the stream, in the stream's order, the same on every server.
// Newcomers get the last keep messages.
func (r *room) broadcaster(stopped chan<- struct{}, keep int) {
	defer close(stopped)
	clients := make(map[string]*client)
	here := make(map[string]bool) // who is in, on every server: the stream says
	var names []byte              // here, for welcomes: "ana","bob", (nil: list them again)
	var history []string          // the last messages, oldest first, within maxHistory
	size := 0                     // the bytes in history
	for {
		select {
		case m, ok := <-r.fromStream:
			if !ok {
				return
			}
			msg := encode(m)
			if cli := m.own; cli != nil && m.Event == "left" {
				// Its own departure: it has heard all that came before.
				if clients[cli.name] == cli {
					delete(clients, cli.name)
				}
				close(cli.departed)
			}
			broadcast(clients, msg)
			if cli := m.own; cli != nil && m.Event == "arrived" {
				// Its own arrival: greeting and registering it here, in one
				// step, gives it its place in the stream's order. It gets
				// all that comes after, and never its own arrival.
				if names == nil {
					names = []byte{}
					for name := range here {
						names = appendName(names, name)
					}
				}
				cli.out.put(welcome(cli.name, names))
				for _, msg := range history {
					cli.out.put(msg) // fits: the outbox takes maxPending bytes
				}
				clients[cli.name] = cli
				close(cli.admitted)
			}
			switch m.Event {
			case "arrived":
				here[m.Body] = true
				if names != nil { // else the next welcome lists them all
					names = appendName(names, m.Body)
				}
			case "left":
				delete(here, m.Body)
				names = nil // list them again at the next welcome
			case "": // said: the history keeps it
				history = append(history, msg)
				size += len(msg)
				for len(history) > keep || size > maxHistory {
					size -= len(history[0])
					history = history[1:] // append copies the rest when it regrows
				}
			}
		case ex := <-r.exits:
			guide(clients, ex)
		}
	}
}

// follower hands the broadcaster what the stream delivers, in the stream's
// order, until the cluster is closed; then it closes r.fromStream.
func (r *room) follower() {
	defer close(r.fromStream)
	for {
		m, err := r.cluster.next()
		if err != nil { // serve closed the cluster, or NATS is lost
			r.fail(lostNATS(err)) // if serve is not stopping already
			// The broadcaster has clients to see out: wait for serve's
			// c.close, which closes r.cluster.closed once they have left.
			<-r.cluster.closed
			return
		}
		r.fromStream <- m
	}
}

// publish puts m in the stream, and waits until the stream has stored it:
// then every server will deliver it, in the same place in the order. If
// NATS is lost, this server has lost the room, and stops.
func (r *room) publish(m message) {
	if err := r.cluster.publish(m); err != nil {
		r.fail(lostNATS(err))
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
// it is told why and removed exactly once (handleConn announces it).
func guide(clients map[string]*client, ex exit) {
	if ex.reason != "" {
		ex.cli.out.put(encode(message{Event: "bye", Body: ex.reason}))
	}
	ex.cli.out.close()                  // its writer sends what is left, then hangs up
	if clients[ex.cli.name] == ex.cli { // not so at the prompt, or after its departure
		delete(clients, ex.cli.name)
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
// name, publishes every message the client sends to the stream, and leaves.
// Its arrival and departure go through the stream too, so that every server
// tells them to its clients, in the same place in the order.
func (r *room) handleConn(ctx context.Context, ws *websocket.Conn) {
	cli := &client{conn: wsConn{ws}, out: newOutbox(), admitted: make(chan struct{}), departed: make(chan struct{})}
	written := make(chan struct{}) // closed by the writer when it is done
	go cli.writer(written)
	defer func() { <-written }()
	// Once ctx is cancelled, say goodbye: the writer sends it, then closes
	// the connection, which ends the Scan.
	stop := context.AfterFunc(ctx, func() {
		cli.out.put(encode(message{Event: "bye", Body: goodbye(ctx)}))
		cli.out.close()
	})
	defer stop()
	input := &frames{ws: ws}
	limit := newLimiter() // flood control: see limit.go
	joined := r.join(ctx, cli, input)
	if joined {
		for input.Scan() && strings.TrimSpace(input.Text()) != "/quit" && limit.Wait(ctx) == nil {
			r.publish(message{Author: cli.name, Body: sanitize(input.Text())})
		}
	}
	if joined {
		// It leaves the room, on this server, where the stream puts its
		// departure; its name is free once the departure is in the stream,
		// so that a newcomer with its name comes after it.
		r.publish(message{Event: "left", Body: cli.name, own: cli})
		r.cluster.release(cli.name)
		select {
		case <-cli.departed:
		case <-ctx.Done(): // it has been told goodbye: nothing more reaches it
		}
	}
	r.exits <- exit{cli, farewell(input.Err())}
}

// goodbye is what clients are told when ctx ends: why the server stops.
func goodbye(ctx context.Context) string {
	if err := context.Cause(ctx); errors.Is(err, errLostNATS) {
		return errLostNATS.Error()
	}
	return "server is shutting down"
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
// the room uses, on any server, and enters the room with it; false if the
// input ends first. A client slow to answer holds up nobody: join runs in
// its own goroutine.
func (r *room) join(ctx context.Context, cli *client, input *frames) bool {
	for {
		if !input.Scan() {
			return false
		}
		var err error
		if cli.name, err = checkName(input.Text()); err != nil {
			cli.out.put(encode(message{Event: "refused", Body: err.Error()}))
			continue
		}
		// The names bucket, in NATS, knows the names in use on every
		// server, and gives each to one client at a time.
		free, err := r.cluster.claim(cli.name)
		if err != nil {
			r.fail(lostNATS(err))
			return false
		}
		if free {
			// It enters the room, on this server, where the stream puts
			// its arrival: wait for it there.
			r.publish(message{Event: "arrived", Body: cli.name, own: cli})
			select {
			case <-cli.admitted:
				return true
			case <-ctx.Done(): // NATS is lost: its arrival may never come
				r.cluster.release(cli.name)
				return false
			}
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
