// Package chattest drives the chat steps' servers over real loopback
// connections for their tests. Every wait has a deadline (Timeout), and a
// failure says what was sent, what was expected and what arrived.
//
// Classroom mode (CHAT_CMD or CHAT_ADDR, see classroom.go): the same tests
// grade a server that is not the repository's own, a student's, in any
// language.
package chattest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

// Timeout bounds every wait for the server. It is generous because the
// race detector on a 2-core machine slows everything down several times.
const Timeout = 10 * time.Second

// Start runs serve on a fresh 127.0.0.1 listener until the test ends, and
// returns its address. When the test ends, serve must return nil within
// Timeout of being cancelled. In classroom mode it starts the student's
// program instead (CHAT_CMD, with its default flags), or returns CHAT_ADDR.
func Start(t testing.TB, serve func(context.Context, net.Listener) error) string {
	t.Helper()
	switch {
	case ClassroomCmd() != "":
		return startStudent(t, nil, false).Addr
	case ClassroomAddr() != "":
		return shared(t)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	return StartOn(t, ln, serve)
}

// StartWith is Start for a test that needs a server of its own, started
// with settings other than the defaults. The test states them once, twice
// written: serve is the step's serve with those settings, run in this
// process; flags are the same settings as the program's flags ("-idle",
// "300ms"), for the student's program in CHAT_CMD mode. With CHAT_ADDR the
// test is skipped: the running server has the settings it has.
func StartWith(t testing.TB, serve func(context.Context, net.Listener) error, flags ...string) string {
	t.Helper()
	switch {
	case ClassroomCmd() != "":
		return startStudent(t, flags, false).Addr
	case ClassroomAddr() != "":
		what := "it needs a server of its own"
		if len(flags) > 0 {
			what = "it needs a server started with " + strings.Join(flags, " ")
		}
		Own(t, what)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	return StartOn(t, ln, serve)
}

// StartPrinter is Start for step 1, whose server answers nothing and
// prints what it receives: serve prints to w. It returns the server's
// address and what it prints, one line at a time (the channel is closed
// once the server has stopped). With CHAT_CMD the lines are what the
// student's program prints on standard output; with CHAT_ADDR the test is
// skipped, since the output of a server already running cannot be read.
func StartPrinter(t testing.TB, serve func(context.Context, net.Listener, io.Writer) error) (string, <-chan string) {
	t.Helper()
	switch {
	case ClassroomCmd() != "":
		p := startStudent(t, nil, true)
		return p.Addr, p.Printed
	case ClassroomAddr() != "":
		Own(t, "what the server prints")
	}
	r, w := io.Pipe()
	lines := make(chan string, 1024)
	go func() {
		s := bufio.NewScanner(r)
		for s.Scan() {
			lines <- s.Text()
		}
		close(lines)
	}()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := StartOn(t, ln, func(ctx context.Context, ln net.Listener) error {
		return serve(ctx, ln, w)
	})
	// Cleanups run last added first, so this one runs before serve is
	// stopped: from then on a write to w fails at once, and no connection
	// of serve's waits for a reader of its output.
	t.Cleanup(func() {
		w.Close()
		for range lines { // until the reader above has finished
		}
	})
	return addr, lines
}

// StartOn is Start with the test's own listener. It ignores classroom mode
// and always starts serve in this process: callers call InProcess first.
func StartOn(t testing.TB, ln net.Listener, serve func(context.Context, net.Listener) error) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			assert.NoError(t, err, "serve returned an error after being cancelled")
		case <-time.After(Timeout):
			t.Errorf("serve did not return within %v of its context being cancelled", Timeout)
		}
	})
	return ln.Addr().String()
}

// Client is one test connection to a chat server.
type Client struct {
	t      testing.TB
	conn   *net.TCPConn
	in     *bufio.Reader
	server string   // the address dialled
	name   string   // its name in the room, once Named
	last   []string // the last lines sent, for failure messages
}

// Dial connects to addr; the connection is closed when the test ends.
func Dial(t testing.TB, addr string) *Client {
	t.Helper()
	c, err := TryDial(t, addr)
	if err != nil {
		if why := gone(t, addr, true); why != "" {
			t.Fatal(why)
		}
		t.Fatal(err)
	}
	return c
}

// TryDial is Dial for goroutines other than the test's: it reports errors
// instead of failing the test.
func TryDial(t testing.TB, addr string) (*Client, error) {
	conn, err := net.DialTimeout("tcp", addr, Timeout)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	t.Cleanup(func() { conn.Close() })
	knowPeer(conn.LocalAddr().String())
	return &Client{t: t, conn: conn.(*net.TCPConn), in: bufio.NewReader(conn), server: addr}, nil
}

// Named records that the client is in the room as name, so that failure
// messages call it by its name rather than by its address.
func (c *Client) Named(name string) *Client {
	c.name = name
	return c
}

// Who is how failure messages call the client: its name once Named, or
// else "the client at" its address (its name in step 2).
func (c *Client) Who() string {
	if c.name != "" {
		return c.name
	}
	return "the client at " + c.Addr()
}

// fatalf fails the test with the message. If err, the error that made
// the test fail, is not nil (the connection ended, or nothing came), and
// the server under test is gone (crashed, or no longer accepting
// connections), it says that first.
func (c *Client) fatalf(err error, format string, args ...any) {
	c.t.Helper()
	msg := fmt.Sprintf(format, args...)
	if err != nil {
		// A connection that ended comes a moment before its server's exit.
		wait := !errors.Is(err, os.ErrDeadlineExceeded)
		if why := gone(c.t, c.server, wait); why != "" {
			msg = why + "\n(then: " + msg + ")"
		}
	}
	c.t.Fatal(msg)
}

// Addr is the client's own address: the name the server sees in step 2.
func (c *Client) Addr() string { return c.conn.LocalAddr().String() }

// Conn is the underlying connection, for tests that misbehave on purpose.
func (c *Client) Conn() *net.TCPConn { return c.conn }

// Send writes lines, each ending in "\n", with one write: the server gets
// them pipelined, as a fast client or a paste would send them.
func (c *Client) Send(lines ...string) {
	c.t.Helper()
	if err := c.TrySend(lines...); err != nil {
		c.fatalf(err, "%v", err)
	}
}

// TrySend is Send that reports errors instead of failing the test.
func (c *Client) TrySend(lines ...string) error {
	c.last = append(c.last, lines...)
	if len(c.last) > 3 {
		c.last = c.last[len(c.last)-3:]
	}
	if err := c.conn.SetWriteDeadline(time.Now().Add(Timeout)); err != nil {
		return err
	}
	_, err := io.WriteString(c.conn, strings.Join(lines, "\n")+"\n")
	if err != nil {
		return fmt.Errorf("%s sending %.80q: %w", c.Who(), lines, err)
	}
	return nil
}

// ReadLine returns the next line without its "\n", waiting at most Timeout.
// With CHAT_ADDR it skips the arrivals, departures and chat lines of
// clients that this test did not create: those of the previous test's
// clients can reach the shared server's room after this test has started,
// as the server catches up with what they did before they left.
func (c *Client) ReadLine() (string, error) {
	for {
		if err := c.conn.SetReadDeadline(time.Now().Add(Timeout)); err != nil {
			return "", err
		}
		line, err := c.in.ReadString('\n')
		if err != nil {
			if line != "" {
				return "", fmt.Errorf("%w after a partial line %q", err, line)
			}
			return "", err
		}
		line = strings.TrimSuffix(line, "\n")
		if ClassroomAddr() == "" {
			return line, nil
		}
		if m := departure.FindStringSubmatch(line); m != nil && !KnownPeer(m[1]) {
			continue
		}
		if m := chat.FindStringSubmatch(line); m != nil && !KnownPeer(m[1]+m[2]) {
			continue
		}
		if m := arrival.FindStringSubmatch(line); m != nil && !knownSoon(m[1]) {
			continue
		}
		return line, nil
	}
}

var (
	// arrival is an arrival line of any TCP step.
	arrival = regexp.MustCompile(`^(\S+) has arrived$`)
	// departure is a departure line of any TCP step.
	departure = regexp.MustCompile(`^(\S+) (?:has left|left the chat)$`)
	// chat is a chat line of any TCP step: "<name> says: " (steps 3-4) or
	// "<addr>: " (step 2).
	chat = regexp.MustCompile(`^(?:(\S+) says: |(\S+:\d+): )`)
)

// Line returns the next line, or fails the test saying what it waited for.
func (c *Client) Line(waitingFor string) string {
	c.t.Helper()
	line, err := c.ReadLine()
	if err != nil {
		c.fatalf(err, "%s expected %s, got %v (%s last sent: %.80q)", c.Who(), waitingFor, err, c.Who(), c.last)
	}
	return line
}

// Expect reads the next line and checks it is want.
func (c *Client) Expect(want string) {
	c.t.Helper()
	got := c.Line(fmt.Sprintf("%q", want))
	if got != want {
		c.fatalf(nil, "%s expected %q, got %.80q (%s last sent: %.80q)", c.Who(), want, got, c.Who(), c.last)
	}
}

// ExpectAfter is Expect with the story told: it reads the next line and
// checks it is want; if not, the test fails saying what was sent, what was
// expected and why, and what arrived instead. The exercises' checks use it.
func (c *Client) ExpectAfter(sent, want, why string) {
	c.t.Helper()
	got, err := c.ReadLine()
	if err != nil {
		c.fatalf(err, "after %q was sent, %s expected %q (%s), got %v", sent, c.Who(), want, why, err)
	}
	if got != want {
		c.fatalf(nil, "after %q was sent, %s expected %q (%s), got %q", sent, c.Who(), want, why, got)
	}
}

// ExpectText reads exactly len(want) bytes, for text without a line ending
// such as a prompt, and checks they are want.
func (c *Client) ExpectText(want string) {
	c.t.Helper()
	require.NoError(c.t, c.conn.SetReadDeadline(time.Now().Add(Timeout)))
	got := make([]byte, len(want))
	n, err := io.ReadFull(c.in, got)
	if err != nil || string(got) != want {
		c.fatalf(err, "%s expected %q, got %.80q (%v) (%s last sent: %.80q)", c.Who(), want, got[:n], err, c.Who(), c.last)
	}
}

// Until reads lines until one is want, and returns the lines before it.
func (c *Client) Until(want string) []string {
	c.t.Helper()
	skipped, err := c.TryUntil(want)
	if err != nil {
		c.fatalf(err, "%s: %v (%s last sent: %.80q)", c.Who(), err, c.Who(), c.last)
	}
	return skipped
}

// TryUntil is Until that reports errors instead of failing the test.
func (c *Client) TryUntil(want string) ([]string, error) {
	var skipped []string
	for {
		line, err := c.ReadLine()
		if err != nil {
			return skipped, fmt.Errorf("expected %.80q, got %w after %d other lines", want, err, len(skipped))
		}
		if line == want {
			return skipped, nil
		}
		skipped = append(skipped, line)
	}
}

// UntilDespite is Until in a test where stuck reads nothing: if want has
// not come within Timeout, the failure says that a client that reads
// nothing blocked everyone.
func (c *Client) UntilDespite(stuck *Client, want string) []string {
	c.t.Helper()
	skipped, err := c.TryUntil(want)
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		c.fatalf(err, "%s waited %v for %.60q, which never came, while %s read nothing: "+
			"a client that reads nothing blocked everyone (a server must never wait for one client: "+
			"see \"Slow and stuck clients\" in docs/protocol.md)", c.Who(), Timeout, want, stuck.Who())
	case err != nil:
		c.fatalf(err, "%s: %v (%s last sent: %.80q)", c.Who(), err, c.Who(), c.last)
	}
	return skipped
}

// ExpectClosed checks that the server closes the connection within Timeout,
// with no whole line before it (a partial line without "\n" is allowed).
func (c *Client) ExpectClosed() {
	c.t.Helper()
	line, err := c.ReadLine()
	switch {
	case err == nil:
		c.t.Fatalf("%s expected the server to close the connection, got %.80q", c.Who(), line)
	case errors.Is(err, os.ErrDeadlineExceeded):
		c.t.Fatalf("%s expected the server to close the connection, still open after %v", c.Who(), Timeout)
	}
	// io.EOF, or a reset: the server has closed the connection.
}

// Reset closes the connection abruptly: the server gets a TCP RST.
func (c *Client) Reset() {
	c.t.Helper()
	require.NoError(c.t, c.conn.SetLinger(0))
	require.NoError(c.t, c.conn.Close())
}

// Close closes the connection normally.
func (c *Client) Close() { c.conn.Close() }

// WaitGoroutines waits until runtime.NumGoroutine() is want, and fails the
// test if it is not within Timeout.
func WaitGoroutines(t testing.TB, want int, what string) {
	t.Helper()
	deadline := time.Now().Add(Timeout)
	got := runtime.NumGoroutine()
	for got != want && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond) // polling, bounded by deadline
		got = runtime.NumGoroutine()
	}
	if got != want {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		t.Fatalf("%s: expected %d goroutines, have %d after %v\n%s", what, want, got, Timeout, buf)
	}
}

var (
	names atomic.Int64
	// run tells this process's names from those of earlier test runs
	// against the same server (classroom mode): 3 letters and digits.
	run = strconv.FormatInt(36*36+rand.Int64N(35*36*36), 36)
)

// Name returns base with a number and this run's mark after it, a name no
// other call in this run returns, so that tests sharing one server
// (classroom mode) never ask for the same username; the random mark makes
// a clash with an earlier run's names unlikely. The name is one of the
// current test's peers.
func Name(base string) string {
	name := fmt.Sprintf("%s%dx%s", base, names.Add(1), run)
	knowPeer(name)
	return name
}

// peers are the addresses and names of the current test's clients.
var peers = struct {
	sync.Mutex
	known map[string]bool
}{known: map[string]bool{}}

func knowPeer(name string) {
	peers.Lock()
	defer peers.Unlock()
	peers.known[name] = true
}

func forgetPeers() {
	peers.Lock()
	defer peers.Unlock()
	clear(peers.known)
}

// knownSoon is KnownPeer for an arrival: a step 2 client's address is
// known only once its dial has returned, and the server may announce it
// a moment before, so an unknown name is given a moment to become known.
func knownSoon(name string) bool {
	for deadline := time.Now().Add(200 * time.Millisecond); !KnownPeer(name); {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond) // polling, bounded by deadline
	}
	return true
}

// KnownPeer reports whether name (or address) is one of the current test's
// clients, for filtering announcements in classroom mode.
func KnownPeer(name string) bool {
	peers.Lock()
	defer peers.Unlock()
	return peers.known[name]
}

// Baseline waits until no goroutine is left from earlier tests (failing the
// test if one stays), and returns how many goroutines are running: the
// count to which the test's own goroutines are added.
func Baseline(t *testing.T) int {
	t.Helper()
	goleak.VerifyNone(t)
	return runtime.NumGoroutine()
}

// NameInScript is Name for a base in a script other than Latin, such as
// "дмитрий" or "محمد": what follows the base is digits and '_' only, so
// the name keeps to one script, as servers may require (a Latin "x" after
// Cyrillic letters mixes scripts).
func NameInScript(base string) string {
	mark, _ := strconv.ParseInt(run, 36, 64)
	name := fmt.Sprintf("%s%d_%d", base, names.Add(1), mark)
	knowPeer(name)
	return name
}
