// Step 5: the chat in the browser. TCP lines become WebSocket frames of
// JSON, and the room remembers its last messages for newcomers.
//
// Run it with `go run ./step5-websocket` and open http://localhost:8080/ in
// two browser tabs. The page is embedded in the program; the WebSocket
// endpoint is /ws.
package main

import (
	"bytes"
	"context"
	_ "embed"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode"
	"unicode/utf8"

	"golang.org/x/net/websocket"
)

const (
	// maxFrame is the largest frame a client may send, in bytes. Without a
	// limit one client could make the server buffer an endless frame until
	// it runs out of memory.
	maxFrame = 8192

	// maxBody is the longest message, in characters.
	maxBody = 1000

	// maxName is the longest username, in characters.
	maxName = 20

	// maxPending is how much output, in bytes, may wait for one client. A
	// client this far behind has stopped reading: it is disconnected, so it
	// can neither hold up the room nor eat the server's memory. 256 KiB is
	// thousands of chat lines, far more than a reading client ever has
	// waiting, so a burst never costs a healthy client its seat.
	maxPending = 256 << 10

	// writeTimeout bounds every write to a client. A client that accepts
	// nothing for this long is gone or stuck, and is disconnected.
	writeTimeout = 5 * time.Second
)

func main() {
	addr := flag.String("addr", "localhost:8080", "address to listen on")
	var opts options
	flag.DurationVar(&opts.idle, "idle", 5*time.Minute, "disconnect clients silent for this long")
	flag.IntVar(&opts.history, "history", 100, "how many messages newcomers are shown")
	flag.StringVar(&opts.origin, "origin", "", "another origin allowed to connect, e.g. https://example.com")
	flag.Parse()
	if opts.idle <= 0 || opts.history < 0 {
		log.Fatal("-idle must be positive and -history not negative")
	}

	// Ctrl-C (SIGINT) or SIGTERM cancels ctx; serve then says goodbye to
	// every client, closes its connection and returns, and the program
	// exits normally.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	log.Printf("listening on http://%s/", ln.Addr())
	if err := serve(ctx, ln, opts); err != nil {
		log.Fatal(err)
	}
}

// options are the server's settings, from its flags.
type options struct {
	idle    time.Duration // disconnect clients silent for this long
	history int           // how many messages newcomers are shown
	origin  string        // another origin allowed to connect, besides the page's own
}

// serve serves the page and the chat on ln until ctx is cancelled, and
// returns once every connection it accepted is closed. net/http runs each
// request, and so each WebSocket, in a goroutine of its own.
func serve(ctx context.Context, ln net.Listener, opts options) error {
	r := newRoom(opts)
	var broadcasting sync.WaitGroup
	broadcasting.Go(r.broadcaster)
	var conns sync.WaitGroup
	var mu sync.Mutex // guards closing: no conns.Add may race conns.Wait
	closing := false
	defer func() {
		mu.Lock()
		closing = true // no new WebSocket from here on
		mu.Unlock()
		conns.Wait()        // every client has left the room,
		close(r.messages)   // so the broadcaster can stop,
		broadcasting.Wait() // and serve returns only once it has.
	}()

	chat := websocket.Server{
		Handshake: sameOrigin(opts.origin),
		Handler:   func(ws *websocket.Conn) { r.handleConn(ctx, ws) },
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		if _, err := w.Write(page); err != nil {
			log.Printf("serving the page: %v", err)
		}
	})
	mux.HandleFunc("GET /ws", func(w http.ResponseWriter, req *http.Request) {
		mu.Lock()
		if closing {
			mu.Unlock()
			http.Error(w, "server is shutting down", http.StatusServiceUnavailable)
			return
		}
		conns.Add(1)
		mu.Unlock()
		defer conns.Done()
		chat.ServeHTTP(w, req)
	})
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		// Hand each request its connection: see frameConn.
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, connKey{}, c)
		},
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	select {
	case err := <-served:
		return err // the listener failed
	case <-ctx.Done():
		// Stop accepting and drop plain HTTP connections. (Shutdown would
		// wait for idle ones, such as a browser's spare connection, for
		// seconds.) Upgraded connections are not net/http's any more:
		// handleConn says goodbye on them and closes them.
		err := srv.Close()
		<-served
		return err
	}
}

// page is the chat's web page, built into the program.
//
//go:embed index.html
var page []byte

// sameOrigin refuses the WebSocket handshake (403) of a page from another
// site. A browser lets any page open a WebSocket to any server, with the
// user's cookies: checking Origin stops cross-site WebSocket hijacking.
// Non-browser clients send no Origin, and need no such protection.
func sameOrigin(allowed string) func(*websocket.Config, *http.Request) error {
	return func(_ *websocket.Config, req *http.Request) error {
		origin := req.Header.Get("Origin")
		if origin == "" || origin == "http://"+req.Host || origin == "https://"+req.Host ||
			(allowed != "" && origin == allowed) {
			return nil
		}
		return fmt.Errorf("origin %q is not allowed", origin)
	}
}

// room connects the connection goroutines to the broadcaster.
type room struct {
	entering chan *client
	messages chan message // closed by serve once every client is gone
	exits    chan exit    // the exit queue: every way out goes through it
	options
}

func newRoom(opts options) *room {
	return &room{
		entering: make(chan *client),
		messages: make(chan message),
		exits:    make(chan exit),
		options:  opts,
	}
}

// message is a frame, either way. Clients send {"body": ...}; the server
// sets author to the sender's name, so nobody can speak as someone else.
// Frames from the server itself have no author and an event instead:
// "welcome", "refused", "arrived", "left" or "bye" (see docs).
type message struct {
	Author string `json:"author"`
	Body   string `json:"body"`
	Event  string `json:"event,omitempty"`
}

// frame encodes m as a WebSocket text frame, ready to be written to a
// connection as it is: a message is encoded once, however many clients
// it goes to, and a client's writer sends all its waiting frames with one
// write (see frameConn).
func frame(m message) string {
	payload, err := json.Marshal(m)
	if err != nil {
		panic(err) // a struct of strings always encodes
	}
	// RFC 6455, section 5.2: FIN and the opcode for text, then the length
	// of the payload, in 7 bits, or in 16 or 64 after a marker. A server's
	// frames are not masked.
	f := []byte{0x81}
	switch n := len(payload); {
	case n < 126:
		f = append(f, byte(n))
	case n < 1<<16:
		f = binary.BigEndian.AppendUint16(append(f, 126), uint16(n))
	default:
		f = binary.BigEndian.AppendUint64(append(f, 127), uint64(n))
	}
	return string(append(f, payload...))
}

// notice is a frame from the server itself.
func notice(event, body string) string {
	return frame(message{Event: event, Body: body})
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
	out      *outbox   // lines waiting for the writer
	admitted chan bool // the broadcaster's answer to entering: is the name free?
}

// broadcaster is the only goroutine that touches the set of clients, so the
// set needs no lock: the others ask for changes through the room's channels,
// and it handles one request at a time.
func (r *room) broadcaster() {
	clients := make(map[string]*client)
	var history []string // the last r.history chat frames, oldest first
	for {
		select {
		case cli := <-r.entering:
			_, taken := clients[cli.name]
			if !taken {
				// Greeting, announcing and registering are one step of the
				// broadcaster, so no message can be broadcast between them:
				// the newcomer receives everything after its greeting, and
				// never its own arrival. (Done by the connection's goroutine,
				// as gopl does, a message can slip past in between.)
				cli.out.put(notice("welcome", cli.name))
				for _, f := range history {
					cli.out.put(f)
				}
				broadcast(clients, notice("arrived", cli.name))
				clients[cli.name] = cli
			}
			cli.admitted <- !taken
		case msg, ok := <-r.messages:
			if !ok {
				return
			}
			f := frame(msg)
			history = append(history, f)
			if len(history) > r.history {
				history = history[1:] // append copies the rest when it regrows
			}
			broadcast(clients, f)
		case ex := <-r.exits:
			guide(clients, ex)
		}
	}
}

// guide is the exit guide. Every way out of the chat ends here, in the
// broadcaster: hanging up, /quit, silence, a line too long, falling too
// far behind, the server shutting down. So whatever made a client leave,
// and however many of those happen at once, it is told why, removed and
// announced exactly once.
func guide(clients map[string]*client, ex exit) {
	if ex.reason != "" {
		ex.cli.out.put(notice("bye", ex.reason))
	}
	ex.cli.out.close()                  // its writer flushes what is left, then hangs up
	if clients[ex.cli.name] == ex.cli { // not so for a client still at the prompt
		delete(clients, ex.cli.name)
		broadcast(clients, notice("left", ex.cli.name))
	}
}

// broadcast queues a frame for every client, and never waits for one. A
// client too far behind to take it is disconnected; its handleConn then
// sees the connection closed and puts it in the exit queue, like any other
// way out.
func broadcast(clients map[string]*client, frame string) {
	for _, cli := range clients {
		if !cli.out.put(frame) {
			log.Printf("%s: over %d bytes behind, disconnecting", cli.name, maxPending)
			cli.out.close()
			// Not cli.conn.Close: x/net/websocket's Close sends a close
			// frame first, which would wait behind the stuck write. Closing
			// the TCP connection under it fails that write at once, and any
			// later one: the writer then hangs up.
			cli.conn.(frameConn).tcp.Close()
		}
	}
}

// handleConn runs one client: it starts the client's writer, asks for a
// name, hands every line the client sends to the broadcaster, and leaves.
func (r *room) handleConn(ctx context.Context, ws *websocket.Conn) {
	tcp := ws.Request().Context().Value(connKey{}).(net.Conn)
	cli := &client{conn: frameConn{ws, tcp}, out: &outbox{ready: make(chan struct{}, 1)}, admitted: make(chan bool)}
	var writing sync.WaitGroup
	writing.Go(cli.writer)
	defer writing.Wait() // the writer closes conn when it is done
	// When the server stops, say goodbye: once the writer has flushed it, it
	// closes the connection, which ends the Scan below.
	stop := context.AfterFunc(ctx, func() {
		cli.out.put(notice("bye", "server is shutting down"))
		cli.out.close()
	})
	defer stop()

	ws.MaxPayloadBytes = maxFrame
	input := &frames{ws: ws, idle: r.idle}
	if r.join(cli, input) {
		r.chat(cli, input)
	}
	r.exits <- exit{cli, farewell(input.Err())}
}

// farewell is what a leaving client is told, given how its input ended.
func farewell(err error) string {
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		return "idle timeout"
	case errors.Is(err, websocket.ErrFrameTooLarge):
		return fmt.Sprintf("frame too large (max %d bytes)", maxFrame)
	case errors.As(err, new(*json.SyntaxError)), errors.As(err, new(*json.UnmarshalTypeError)):
		return `frame is not JSON of the form {"body": "..."}`
	case errors.As(err, new(badBody)):
		return err.Error()
	default:
		return "" // it hung up, said /quit, or was disconnected
	}
}

// join asks the client for a name until it gives a valid one that nobody in
// the room is using, and enters the room with it. It reports false if the
// client's input ends first. Until then the client is not in the room and
// gets no chat; and since join runs in the client's own goroutine, a client
// slow to answer holds up nobody else.
func (r *room) join(cli *client, input *frames) bool {
	for {
		if !input.Scan() {
			return false
		}
		cli.name = strings.TrimSpace(input.Text())
		if err := checkName(cli.name); err != nil {
			cli.out.put(notice("refused", err.Error()))
			continue
		}
		// Only the broadcaster knows which names are in use: ask it.
		r.entering <- cli
		if <-cli.admitted {
			return true
		}
		cli.out.put(notice("refused", "name is taken"))
	}
}

// checkName says what is wrong with a name, if anything. Names stand before
// every line their owner sends, so they are short and plain: letters of any
// script (with their accents and vowel signs), digits, '_' and '-'.
func checkName(name string) error {
	switch {
	case name == "":
		return errors.New("name is empty")
	case utf8.RuneCountInString(name) > maxName:
		return fmt.Errorf("name is too long (max %d characters)", maxName)
	}
	for _, r := range name {
		if !unicode.In(r, unicode.Letter, unicode.Mark, unicode.Digit) && r != '_' && r != '-' {
			return fmt.Errorf("name has a character that is not allowed: %q (use letters, digits, _ or -)", r)
		}
	}
	return nil
}

// chat hands every line the client sends to the broadcaster, until the
// client hangs up or says /quit.
func (r *room) chat(cli *client, input *frames) {
	for input.Scan() {
		if strings.TrimSpace(input.Text()) == "/quit" {
			return
		}
		r.messages <- message{Author: cli.name, Body: sanitize(input.Text())}
	}
}

// frames reads a client's JSON frames the way bufio.Scanner reads lines:
// Scan waits up to idle for the next frame, and Text is its body. Scan
// stops at the first frame that is not a message with a sensible body.
type frames struct {
	ws   *websocket.Conn
	idle time.Duration
	msg  message
	err  error
}

func (f *frames) Scan() bool {
	if f.err = f.ws.SetReadDeadline(time.Now().Add(f.idle)); f.err != nil {
		return false
	}
	f.msg = message{}
	if f.err = websocket.JSON.Receive(f.ws, &f.msg); f.err != nil {
		return false
	}
	switch n := utf8.RuneCountInString(f.msg.Body); {
	case n == 0:
		f.err = badBody("body is missing or empty")
	case n > maxBody:
		f.err = badBody(fmt.Sprintf("body is too long (max %d characters)", maxBody))
	}
	return f.err == nil
}

func (f *frames) Text() string { return f.msg.Body }
func (f *frames) Err() error   { return f.err }

// badBody is why a frame's body was refused.
type badBody string

func (b badBody) Error() string { return string(b) }

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

// writer is the only goroutine that writes to the client's connection. It
// takes everything waiting in the outbox and writes it with one call, so
// under load one system call carries many frames instead of one each. It
// closes the connection once the outbox is closed and empty, or a write
// fails; handleConn's Scan then ends too.
func (c *client) writer() {
	defer c.conn.Close()
	for {
		batch, ok := c.out.take()
		if !ok {
			return
		}
		if err := c.conn.SetWriteDeadline(time.Now().Add(writeTimeout)); err != nil {
			return // the connection is already closed
		}
		_, err := c.conn.Write(batch.Bytes())
		batch.Reset()
		buffers.Put(batch)
		if err != nil {
			// A client that hung up, or a connection closed under us as
			// the server stops, is no news. Anything else is worth a line.
			if !errors.Is(err, syscall.EPIPE) && !errors.Is(err, syscall.ECONNRESET) && !errors.Is(err, net.ErrClosed) {
				log.Print(err) // it names both ends of the connection
			}
			return
		}
	}
}

// buffers lends outboxes the buffers they queue output in. An outbox has
// one only while it has output waiting, and its writer gives it back once
// written: a busy client allocates nothing, and an idle one holds no
// buffer. The pool holds only empty buffers, so servers can share it.
var buffers = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// outbox is a client's queue of output. The broadcaster puts text in and
// never waits; the client's writer takes all of it at once. Counting the
// queue in bytes, not lines, is what lets a burst through while a stuck
// client is still found out: see maxPending.
type outbox struct {
	mu      sync.Mutex
	pending *bytes.Buffer // output the writer has not taken yet; nil if none
	closed  bool          // no more output: the writer ends once pending is empty
	ready   chan struct{} // a token while pending is not empty; closed by close
}

// put queues text for the writer without waiting. It reports false, and
// queues nothing, if the client would then have more than maxPending bytes
// waiting: it is not reading. Putting into a closed outbox does nothing.
func (o *outbox) put(text string) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	switch {
	case o.closed:
		return true
	case o.pending == nil:
		o.pending = buffers.Get().(*bytes.Buffer)
		select {
		case o.ready <- struct{}{}: // wake the writer
		default: // a token is there already
		}
	case o.pending.Len()+len(text) > maxPending:
		return false
	}
	o.pending.WriteString(text)
	return true
}

// close tells the writer there will be no more output.
func (o *outbox) close() {
	o.mu.Lock()
	defer o.mu.Unlock()
	if !o.closed {
		o.closed = true
		close(o.ready) // from now on take never waits
	}
}

// take waits for output and returns all of it, in a buffer to be given
// back to buffers once written. It reports false once the outbox is closed
// and empty. A token is sent only when the queue stops being empty, and
// take empties it after every token, so a token always finds work.
func (o *outbox) take() (*bytes.Buffer, bool) {
	<-o.ready
	// Let every goroutine that is ready to run go first. The broadcaster
	// may have more for this client; what it queues now goes out in this
	// batch, not in a write of its own. Under load this makes batches many
	// lines long. When the server is quiet there is nobody to let go first.
	runtime.Gosched()
	o.mu.Lock()
	defer o.mu.Unlock()
	batch := o.pending
	o.pending = nil
	return batch, batch != nil
}

// connKey is the request context's key for the request's connection.
type connKey struct{}

// frameConn is a client's WebSocket as its writer sees it. Write sends the
// frames the broadcaster encoded straight to the connection underneath,
// so that one system call carries them all: x/net/websocket's own Write
// makes a frame of every call, and flushes each. Everything else, the
// deadlines and Close (which sends a close frame), is the WebSocket's.
// x/net/websocket still writes frames of its own (a pong, the close
// frame), each with one Write; a net.Conn never mixes two Writes.
type frameConn struct {
	*websocket.Conn
	tcp net.Conn
}

func (c frameConn) Write(frames []byte) (int, error) { return c.tcp.Write(frames) }
