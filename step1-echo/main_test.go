package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"gochat-steps/internal/chattest"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestMain(m *testing.M) { chattest.Main(m, main) }

// Step 1's server answers nothing: every test here reads what it prints
// on its standard output. With CHAT_ADDR that output cannot be read, so the
// run fails, instead of passing with every test skipped and nothing
// graded. (With CHAT_CMD the tests read what the student's program prints.)
func TestStep1IsNotGradedWithChatAddr(t *testing.T) {
	addr := chattest.ClassroomAddr()
	if addr == "" {
		t.Skip("a check of CHAT_ADDR mode only")
	}
	t.Fatalf("CHAT_ADDR=%s cannot grade step 1: its tests read what the server prints; use CHAT_CMD", addr)
}

// start runs the server for the test and returns its address and what it
// prints, one line at a time.
func start(t *testing.T) (string, *output) {
	t.Helper()
	addr, lines := chattest.StartPrinter(t, serve)
	return addr, &output{t: t, lines: lines}
}

type output struct {
	t     *testing.T
	lines <-chan string
}

// expect checks the server's next output line.
func (o *output) expect(want string) {
	o.t.Helper()
	select {
	case got, ok := <-o.lines:
		require.True(o.t, ok, "expected the server to print %.80q, but its output has ended", want)
		require.Equal(o.t, want, got, "the server printed something else")
	case <-time.After(chattest.Timeout):
		o.t.Fatalf("expected the server to print %.80q, nothing after %v", want, chattest.Timeout)
	}
}

func TestEveryLineIsPrintedAfterItsSendersAddress(t *testing.T) {
	addr, out := start(t)
	c := chattest.Dial(t, addr)
	c.Send("hello", "world")
	out.expect(c.Addr() + ": hello")
	out.expect(c.Addr() + ": world")
}

func TestNothingIsSentBack(t *testing.T) {
	addr, out := start(t)
	c := chattest.Dial(t, addr)
	c.Send("hello")
	out.expect(c.Addr() + ": hello")
	require.NoError(t, c.Conn().CloseWrite())
	c.ExpectClosed() // fails if the server wrote anything
}

func TestLinesEndingInCRLFAreAccepted(t *testing.T) {
	addr, out := start(t)
	c := chattest.Dial(t, addr)
	c.Send("telnet says hi\r")
	out.expect(c.Addr() + ": telnet says hi")
}

func TestControlCharactersNeverReachTheServersTerminal(t *testing.T) {
	addr, out := start(t)
	c := chattest.Dial(t, addr)
	c.Send("\x1b]0;pwned\x07 \xff")
	out.expect(c.Addr() + ": \uFFFD]0;pwned\uFFFD \uFFFD")
	// Nor bidi controls (U+202E reverses what follows), nor line separators;
	// emoji sequences joined with U+200D stay whole.
	c.Send("x\u202Eevil.exe\u202C \u2028 👩\u200D👧")
	out.expect(c.Addr() + ": x\uFFFDevil.exe\uFFFD \uFFFD 👩\u200D👧")
}

func TestConcurrentClientsNeverInterleaveMidLine(t *testing.T) {
	addr, out := start(t)
	const clients, lines = 10, 200
	long := strings.Repeat("x", 3000) // long lines make torn writes likely
	require.NoError(t, chattest.Concurrently(clients, func(i int) error {
		c, err := chattest.TryDial(t, addr)
		if err != nil {
			return err
		}
		for j := range lines {
			if err := c.TrySend(fmt.Sprintf("%d %s", j, long)); err != nil {
				return err
			}
		}
		return nil
	}))
	for range clients * lines {
		select {
		case line := <-out.lines:
			_, text, _ := strings.Cut(line, ": ")
			_, x, _ := strings.Cut(text, " ")
			require.Equal(t, long, x, "a line was torn: %.80q", line)
		case <-time.After(chattest.Timeout):
			t.Fatal("the server stopped printing")
		}
	}
}

// countingWriter is an io.Writer that is not safe for two goroutines at
// once (a bytes.Buffer), and signals every Write on a channel.
type countingWriter struct {
	buf    bytes.Buffer
	writes chan struct{}
}

func (w *countingWriter) Write(p []byte) (int, error) {
	n, err := w.buf.Write(p)
	w.writes <- struct{}{}
	return n, err
}

// The printer's mutex makes the connections' goroutines take turns at the
// server's output. Without it, two of them write to it at once: the race
// detector (go test -race) reports that, even when no line comes out torn.
func TestConnectionsTakeTurnsAtTheOutput(t *testing.T) {
	chattest.InProcess(t)
	const clients, lines = 10, 50
	out := &countingWriter{writes: make(chan struct{}, clients*lines)}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := chattest.StartOn(t, ln, func(ctx context.Context, ln net.Listener) error {
		return serve(ctx, ln, out)
	})
	require.NoError(t, chattest.Concurrently(clients, func(i int) error {
		c, err := chattest.TryDial(t, addr)
		if err != nil {
			return err
		}
		for j := range lines {
			if err := c.TrySend(fmt.Sprintf("client %d line %d", i, j)); err != nil {
				return err
			}
		}
		return nil
	}))
	deadline := time.After(chattest.Timeout)
	for n := range clients * lines {
		select {
		case <-out.writes:
		case <-deadline:
			t.Fatalf("the server printed %d of %d lines within %v", n, clients*lines, chattest.Timeout)
		}
	}
	// Every Write happened before its signal, so reading buf is safe now.
	printed := strings.Split(strings.TrimSuffix(out.buf.String(), "\n"), "\n")
	assert.Len(t, printed, clients*lines, "expected one line per line sent")
}

func TestLongLineDisconnectsOnlyItsSender(t *testing.T) {
	addr, out := start(t)
	ana := chattest.Dial(t, addr)
	bob := chattest.Dial(t, addr)
	bob.Send(strings.Repeat("x", maxLine+1))
	bob.ExpectClosed()
	ana.Send("still here")
	out.expect(ana.Addr() + ": still here")
}

func TestOneGoroutinePerClient(t *testing.T) {
	chattest.InProcess(t)
	base := chattest.Baseline(t)
	addr, _ := start(t)
	base++ // the test's own reader of the server's output
	chattest.WaitGoroutines(t, base+1, "serve")
	const n = 20
	var clients []*chattest.Client
	for range n {
		clients = append(clients, chattest.Dial(t, addr))
	}
	chattest.WaitGoroutines(t, base+1+n, fmt.Sprintf("%d clients", n))
	for _, c := range clients {
		c.Reset()
	}
	chattest.WaitGoroutines(t, base+1, "all clients gone")
}

func TestProgramPrintsLinesAndStopsCleanlyOnSIGTERM(t *testing.T) {
	chattest.InProcess(t) // it reads what the program prints
	p := chattest.StartProcess(t, "-addr", "127.0.0.1:0")
	c := chattest.Dial(t, p.Addr)
	c.Send("over the wire")
	require.NoError(t, c.Conn().SetReadDeadline(time.Now().Add(chattest.Timeout)))
	line, err := p.Stdout.ReadString('\n')
	require.NoError(t, err)
	assert.Equal(t, c.Addr()+": over the wire\n", line)
	assert.Equal(t, 0, p.Stop(syscall.SIGTERM, 5*time.Second))
	c.ExpectClosed()
}
