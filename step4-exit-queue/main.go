// Step 4: one way out. Every way a client leaves the chat goes through one
// exit queue, drained by the broadcaster's exit guide.
//
// Run it with `go run ./step4-exit-queue` and connect from other terminals
// with `go run ./netcat`. Leave with /quit, by hanging up, by staying
// silent for -idle, or stop the server with Ctrl-C: the others always see
// "<name> left the chat", once.
package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode"
	"unicode/utf8"
)

const (
	// maxLine is the longest line a client may send, in bytes, counting its
	// line ending. Without a limit one client could make the server buffer
	// an endless line until it runs out of memory.
	maxLine = 4096

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
	addr := flag.String("addr", "localhost:8000", "address to listen on")
	idle := flag.Duration("idle", 5*time.Minute, "disconnect clients silent for this long")
	flag.Parse()
	if *idle <= 0 {
		log.Fatal("-idle must be positive")
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
	log.Printf("listening on %s", ln.Addr())
	if err := serve(ctx, ln, *idle); err != nil {
		log.Fatal(err)
	}
}

// serve accepts connections on ln until ctx is cancelled, and returns once
// every connection it accepted is closed. Each connection gets a goroutine
// of its own, so a client that is slow to send never holds up the others.
func serve(ctx context.Context, ln net.Listener, idle time.Duration) error {
	r := newRoom(idle)
	var broadcasting sync.WaitGroup
	broadcasting.Go(r.broadcaster)
	var conns sync.WaitGroup
	defer func() {
		conns.Wait()        // every client has left the room,
		close(r.messages)   // so the broadcaster can stop,
		broadcasting.Wait() // and serve returns only once it has.
	}()
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
		conns.Go(func() { r.handleConn(ctx, conn) })
	}
}

// acceptRetryDelay is how long serve waits after a failed Accept.
const acceptRetryDelay = 50 * time.Millisecond

// room connects the connection goroutines to the broadcaster.
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
	out      *outbox   // lines waiting for the writer
	admitted chan bool // the broadcaster's answer to entering: is the name free?
}

// broadcaster is the only goroutine that touches the set of clients, so the
// set needs no lock: the others ask for changes through the room's channels,
// and it handles one request at a time.
func (r *room) broadcaster() {
	clients := make(map[string]*client)
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

// guide is the exit guide. Every way out of the chat ends here, in the
// broadcaster: hanging up, /quit, silence, a line too long, falling too
// far behind, the server shutting down. So whatever made a client leave,
// and however many of those happen at once, it is told why, removed and
// announced exactly once.
func guide(clients map[string]*client, ex exit) {
	if ex.reason != "" {
		ex.cli.out.put(ex.reason + "\n")
	}
	ex.cli.out.close()                  // its writer flushes what is left, then hangs up
	if clients[ex.cli.name] == ex.cli { // not so for a client still at the prompt
		delete(clients, ex.cli.name)
		broadcast(clients, ex.cli.name+" left the chat")
	}
}

// broadcast queues line for every client, and never waits for one. A client
// too far behind to take it is disconnected; its handleConn then sees the
// connection closed and puts it in the exit queue, like any other way out.
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
	cli := &client{conn: conn, out: &outbox{ready: make(chan struct{}, 1)}, admitted: make(chan bool)}
	var writing sync.WaitGroup
	writing.Go(cli.writer)
	defer writing.Wait() // the writer closes conn when it is done
	// When the server stops, say goodbye: once the writer has flushed it, it
	// closes the connection, which ends the Scan below.
	stop := context.AfterFunc(ctx, func() {
		cli.out.put("server is shutting down\n")
		cli.out.close()
	})
	defer stop()

	input := newScanner(idleConn{conn, r.idle})
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
	case errors.Is(err, bufio.ErrTooLong):
		return fmt.Sprintf("line too long (max %d bytes)", maxLine)
	default:
		return "" // it hung up, said /quit, or was disconnected
	}
}

// join asks the client for a name until it gives a valid one that nobody in
// the room is using, and enters the room with it. It reports false if the
// client's input ends first. Until then the client is not in the room and
// gets no chat; and since join runs in the client's own goroutine, a client
// slow to answer holds up nobody else.
func (r *room) join(cli *client, input *bufio.Scanner) bool {
	for {
		cli.out.put("Enter your username: ")
		if !input.Scan() {
			return false
		}
		cli.name = strings.TrimSpace(input.Text())
		if err := checkName(cli.name); err != nil {
			cli.out.put(err.Error() + "\n")
			continue
		}
		// Only the broadcaster knows which names are in use: ask it.
		r.entering <- cli
		if <-cli.admitted {
			return true
		}
		cli.out.put("name is taken\n")
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
func (r *room) chat(cli *client, input *bufio.Scanner) {
	for input.Scan() {
		if strings.TrimSpace(input.Text()) == "/quit" {
			return
		}
		r.messages <- cli.name + " says: " + sanitize(input.Text())
	}
}

// newScanner reads conn line by line. bufio.ScanLines drops the "\r" of a
// "\r\n" ending, so telnet and Windows clients work too. The buffer starts
// small and grows only as far as maxLine: an idle client costs little.
func newScanner(conn net.Conn) *bufio.Scanner {
	input := bufio.NewScanner(conn)
	input.Buffer(make([]byte, 0, 512), maxLine)
	return input
}

// idleConn is a connection whose reads fail once the client has sent
// nothing for idle: that is how a silent client is found out.
type idleConn struct {
	net.Conn
	idle time.Duration
}

func (c idleConn) Read(p []byte) (int, error) {
	if err := c.SetReadDeadline(time.Now().Add(c.idle)); err != nil {
		return 0, err
	}
	return c.Conn.Read(p)
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

// writer is the only goroutine that writes to the client's connection. It
// takes everything waiting in the outbox and writes it with one call, so
// under load one system call carries many lines instead of one each. It
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
