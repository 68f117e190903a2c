package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"gochat-steps/internal/chattest"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The tests of clients that try to hurt the others, or the server: silent,
// dribbling, pinging without reading, too many, with odd frames, or a page
// from another site.

// An idle client is a dead one: it sends no frame at all, not even the
// pongs a live client sends back to the server's pings. This one reads,
// but answers nothing.
func TestClientsThatAnswerNothingAreToldAndDisconnected(t *testing.T) {
	chattest.Parallel(t)
	addr := start(t, options{idle: 300 * time.Millisecond, history: 10, maxConns: 2000})
	raw := joinRaw(t, addr, chattest.Name("ana"))
	ms, err := raw.nextMessages()
	require.NoError(t, err, "after %v of silence, expected a bye", 300*time.Millisecond)
	assert.Equal(t, []message{{Event: "bye", Body: "idle timeout"}}, bare(ms))
	op := byte(0x9)
	for op == 0x9 { // pings
		op, _, err = raw.tryNext()
		require.NoError(t, err)
	}
	assert.Equal(t, byte(0x8), op, "after the bye, expected a close frame")
}

// A tab that only reads is not idle: the server pings it, the client
// answers by itself (browsers do, and so does x/net/websocket while it
// reads), and the pongs keep it in the room well past -idle.
func TestAQuietReaderThatAnswersPingsStaysPastIdle(t *testing.T) {
	chattest.Parallel(t)
	const idle = time.Second // pings every half second: a loaded machine may be late by some
	addr := start(t, options{idle: idle, history: 10, maxConns: 2000})
	ana := chattest.Name("ana")
	a := join(t, addr, ana)
	heard := make(chan message, 10)
	go func() { // a reads all the time, so that it answers pings
		defer close(heard)
		for {
			m, err := a.tryNext()
			if err != nil {
				return
			}
			heard <- m
		}
	}()
	// The passage of time is what this test is about.
	select {
	case m := <-heard:
		t.Fatalf("%s only reads, and expected nothing for %v, got %+v", ana, 3*idle, m)
	case <-time.After(3 * idle):
	}
	b := join(t, addr, chattest.Name("bob"))
	b.send("still there?")
	for _, want := range []message{{Event: "arrived", Body: b.name}, says(b.name, "still there?")} {
		select {
		case m, ok := <-heard:
			require.True(t, ok, "%s answered every ping, and was disconnected after all", ana)
			require.Equal(t, want, m.as(want))
		case <-time.After(chattest.Timeout):
			t.Fatalf("%s expected %+v, got nothing", ana, want)
		}
	}
}

// The idle rule counts whole frames, not bytes: a client that sends a
// frame a byte at a time, never ending it, is idle.
func TestAClientDribblingBytesIsStillIdle(t *testing.T) {
	chattest.Parallel(t)
	const idle = 500 * time.Millisecond
	addr := start(t, options{idle: idle, history: 10, maxConns: 2000})
	raw := joinRaw(t, addr, chattest.Name("ana"))
	f := frame(0x81, `{"body": "this frame takes forever"}`)
	bye := make(chan []message, 1)
	go func() {
		ms, _ := raw.nextMessages()
		bye <- ms
	}()
	start := time.Now()
	tick := time.NewTicker(idle / 5)
	defer tick.Stop()
	for _, b := range f {
		select {
		case ms := <-bye:
			elapsed := time.Since(start)
			require.Equal(t, []message{{Event: "bye", Body: "idle timeout"}}, bare(ms))
			assert.Less(t, elapsed, 3*idle, "a byte every %v kept the client for %v", idle/5, elapsed)
			return
		case <-tick.C:
			if _, err := raw.conn.Write([]byte{b}); err != nil {
				continue // the server hung up: the bye is on its way
			}
		}
	}
	t.Fatalf("a frame sent a byte every %v, over %v, was not cut off by -idle %v", idle/5, time.Since(start), idle)
}

// A client at the name prompt that floods pings and never reads fills its
// connection with pongs: the pong that cannot be written must not hold
// up the server's exit.
func TestAPingFloodDoesNotSlowTheShutdown(t *testing.T) {
	chattest.Parallel(t)
	p := chattest.StartProcess(t, "-addr", "127.0.0.1:0")
	raw := dialRaw(t, p.Addr)
	require.NoError(t, raw.conn.(*net.TCPConn).SetReadBuffer(4096))
	ping := frame(0x89, strings.Repeat("p", 125))
	flood := make([]byte, 0, 100*len(ping))
	for range 100 {
		flood = append(flood, ping...)
	}
	// Flood until the server stops reading: it is then stuck in a pong.
	for sent := 0; ; sent += len(flood) {
		require.Less(t, sent, 1<<30, "1 GB of pings, and the server still reads them")
		require.NoError(t, raw.conn.SetWriteDeadline(time.Now().Add(time.Second)))
		if _, err := raw.conn.Write(flood); err != nil {
			require.ErrorIs(t, err, os.ErrDeadlineExceeded)
			break
		}
	}
	// Well under writeTimeout (5 s), even with -race, which adds a second
	// at exit.
	assert.Equal(t, 0, p.Stop(syscall.SIGTERM, 3*time.Second+byeTimeout))
}

// A newcomer gets the newest messages that fit in maxHistory bytes of
// JSON, in order, with no gap, and the newest among them: here, 100
// messages of 1,000 characters, each over 4,000 bytes of JSON.
func TestTheHistoryKeepsTheNewestMessagesThatFit(t *testing.T) {
	for _, tc := range []struct{ name, char string }{
		{"<, 6 bytes of JSON each", "<"},
		{"emoji, 4 bytes each", "😀"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			chattest.Parallel(t)
			addr := start(t, defaults)
			ana := chattest.Name("ana")
			a := join(t, addr, ana)
			long := strings.Repeat(tc.char, maxBody-4)
			size, fit := 0, 0 // the messages that fit, from the newest
			for i := range defaults.history {
				body := fmt.Sprintf("%03d %s", i, long)
				a.send(body)
				a.expect(says(ana, body))
				if size += len(encode(says(ana, body))); size <= maxHistory {
					fit++
				}
			}
			b := join(t, addr, chattest.Name("bob"))
			a.expect(message{Event: "arrived", Body: b.name})
			a.send("live")
			var got []int // the numbers of the messages in b's history
			for {
				m, err := b.tryNext()
				require.NoError(t, err, "%s joined after %d long messages; after %d of them in its history (%v), "+
					"expected more, or the live message", b.name, defaults.history, len(got), got)
				if m.is(says(ana, "live")) {
					break
				}
				var n int
				_, err = fmt.Sscanf(m.Body, "%d ", &n)
				require.True(t, err == nil && m.Author == ana, "%s expected the history or the live message, got %+v", b.name, m)
				got = append(got, n)
			}
			newest := defaults.history - 1
			require.NotEmpty(t, got, "%s got no history at all", b.name)
			for i, n := range got {
				require.Equal(t, newest-len(got)+1+i, n,
					"%s's history should be the newest messages, in order, oldest first, with no gap, the newest (%d) last: got %v",
					b.name, newest, got)
			}
			if !chattest.Classroom() { // a server in another language counts bytes its own way
				assert.Len(t, got, fit, "the newest messages that fit in %d bytes of JSON", maxHistory)
			}
		})
	}
}

// Past -maxconns open WebSockets, the next handshake is refused with 503
// and a reason; once one leaves, there is a seat again.
func TestPastMaxconnsTheServerSaysItIsFull(t *testing.T) {
	chattest.Parallel(t)
	addr := start(t, options{idle: time.Minute, history: 10, maxConns: 3})
	var in []*wsClient
	for range 3 {
		in = append(in, join(t, addr, chattest.Name("c")))
	}
	status, body := handshake(t, addr, "localhost")
	assert.Equal(t, http.StatusServiceUnavailable, status, "a 4th WebSocket with -maxconns 3")
	assert.Equal(t, "server is full\n", body)
	in[0].ws.Close()
	require.NoError(t, in[2].tryUntil(message{Event: "left", Body: in[0].name}))
	require.Eventually(t, func() bool {
		status, _ := handshake(t, addr, "localhost")
		return status == http.StatusSwitchingProtocols
	}, chattest.Timeout, 10*time.Millisecond, "a seat was freed, and no WebSocket could take it")
}

// handshake asks for a WebSocket with the Host header host, and returns
// the status and body of the answer.
func handshake(t *testing.T, addr, host string) (int, string) {
	t.Helper()
	req, err := http.NewRequest("GET", "http://"+addr+"/ws", nil)
	require.NoError(t, err)
	req.Host = host
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "websocket")
	req.Header.Set("Sec-WebSocket-Version", "13")
	req.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusSwitchingProtocols {
		return resp.StatusCode, ""
	}
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(b)
}

// A keep-alive connection that asks for nothing more is closed once it
// has been silent for -idle.
func TestAnIdleKeepAliveConnectionIsClosed(t *testing.T) {
	chattest.Parallel(t)
	const idle = 300 * time.Millisecond
	addr := start(t, options{idle: idle, history: 10, maxConns: 2000})
	conn, err := net.DialTimeout("tcp", addr, chattest.Timeout)
	require.NoError(t, err)
	defer conn.Close()
	require.NoError(t, conn.SetDeadline(time.Now().Add(chattest.Timeout)))
	_, err = fmt.Fprintf(conn, "GET / HTTP/1.1\r\nHost: %s\r\n\r\n", addr)
	require.NoError(t, err)
	in := bufio.NewReader(conn)
	resp, err := http.ReadResponse(in, nil)
	require.NoError(t, err)
	_, err = io.Copy(io.Discard, resp.Body)
	require.NoError(t, err)
	resp.Body.Close()
	_, err = in.ReadByte()
	require.ErrorIs(t, err, io.EOF, "after one GET / and %v of silence, expected the server to close the connection", idle)
}

// The page runs only the script and style it loads from the server,
// nothing inline (so HTML in a message could never run), cannot be framed
// by another site, and its files are never sniffed for another type.
func TestThePageAllowsNoInlineCodeAndNoFraming(t *testing.T) {
	chattest.Parallel(t)
	addr := start(t, defaults)
	resp, err := http.Get("http://" + addr + "/")
	require.NoError(t, err)
	defer resp.Body.Close()
	html, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	csp := resp.Header.Get("Content-Security-Policy")
	for _, want := range []string{"default-src 'self'", "frame-ancestors 'none'"} {
		assert.Contains(t, csp, want, "Content-Security-Policy")
	}
	assert.NotContains(t, csp, "unsafe-inline", "Content-Security-Policy")
	assert.Equal(t, "DENY", resp.Header.Get("X-Frame-Options"))
	assert.Equal(t, "nosniff", resp.Header.Get("X-Content-Type-Options"))
	assert.NotRegexp(t, `<script[^>]*>\s*[^<\s]|<style|\sstyle=|\son[a-z]+=`, string(html),
		"the page has inline script or style, which the policy forbids")

	// Every script and style sheet it loads comes with its type, not sniffed.
	files := regexp.MustCompile(`(?:src|href)="([^"]+\.(?:js|css))"`).FindAllStringSubmatch(string(html), -1)
	require.NotEmpty(t, files, "the page loads no script")
	for _, f := range files {
		resp, err := http.Get("http://" + addr + "/" + strings.TrimPrefix(f[1], "/"))
		require.NoError(t, err)
		resp.Body.Close()
		assert.Equal(t, http.StatusOK, resp.StatusCode, f[1])
		assert.Equal(t, "nosniff", resp.Header.Get("X-Content-Type-Options"), f[1])
		assert.Regexp(t, `^(text/javascript|text/css); charset=utf-8$`, resp.Header.Get("Content-Type"), f[1])
	}
}

// DNS rebinding: a page from evil.example, whose name its owner then
// points at 127.0.0.1, sends Host: evil.example, and its origin matches
// it. The server refuses a Host that is not its own, for the page and the
// WebSocket alike.
func TestRequestsForAnotherHostAreRefused(t *testing.T) {
	chattest.Parallel(t)
	addr := start(t, defaults)
	_, port, err := net.SplitHostPort(addr)
	require.NoError(t, err)
	for _, tc := range []struct {
		host string
		ok   bool
	}{
		{addr, true},
		{"localhost:" + port, true},
		{"127.0.0.1:" + port, true},
		{"[::1]:" + port, true},
		{"LOCALHOST:" + port, true}, // host names are case-insensitive
		{"evil.example:" + port, false},
		{"localhost.evil.example:" + port, false},
	} {
		req, err := http.NewRequest("GET", "http://"+addr+"/", nil)
		require.NoError(t, err)
		req.Host = tc.host
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		status, _ := handshake(t, addr, tc.host)
		if tc.ok {
			assert.Equal(t, http.StatusOK, resp.StatusCode, "GET / with Host %q", tc.host)
			assert.Equal(t, http.StatusSwitchingProtocols, status, "GET /ws with Host %q", tc.host)
		} else {
			assert.Equal(t, http.StatusForbidden, resp.StatusCode, "GET / with Host %q", tc.host)
			assert.Equal(t, http.StatusForbidden, status, "GET /ws with Host %q", tc.host)
		}
	}
}

// To serve the chat under a name, the name is given as -origin.
func TestTheHostOfOriginIsServed(t *testing.T) {
	chattest.Parallel(t)
	addr := start(t, options{idle: time.Minute, history: 10, origin: "https://chat.example", maxConns: 2000})
	_, port, err := net.SplitHostPort(addr)
	require.NoError(t, err)
	req, err := http.NewRequest("GET", "http://"+addr+"/", nil)
	require.NoError(t, err)
	for _, host := range []string{"chat.example", "Chat.Example"} { // either case
		req.Host = host + ":" + port
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		assert.Equal(t, http.StatusOK, resp.StatusCode, "GET / with Host %q and -origin https://chat.example", req.Host)
	}
}

// x/net/websocket reads each fragment of a message as a message of its
// own, ignores the reserved bits, and reads binary frames and reserved
// opcodes as text. The server refuses them all, saying why, and the room
// never sees them.
func TestFramesTheServerCannotReadAreRefusedWithAReason(t *testing.T) {
	const body = `{"body": "sneaky"}`
	for _, tc := range []struct {
		name   string
		frames [][]byte
		reason string
	}{
		{"binary", [][]byte{frame(0x82, body)}, "binary frames are not accepted: send JSON in a text frame"},
		{"fragmented", [][]byte{frame(0x01, body), frame(0x80, "")}, "fragmented messages are not accepted: send each in one frame"},
		{"a lone continuation", [][]byte{frame(0x80, body)}, "fragmented messages are not accepted: send each in one frame"},
		{"reserved bit RSV1", [][]byte{frame(0xC1, body)}, "frame has reserved bits set (no extension was agreed)"},
		{"reserved opcode 3", [][]byte{frame(0x83, body)}, "frame has a reserved opcode (3)"},
		{"reserved opcode 11", [][]byte{frame(0x8B, body)}, "frame has a reserved opcode (11)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			chattest.Parallel(t)
			addr := start(t, defaults)
			ana := chattest.Name("ana")
			a := join(t, addr, ana)
			raw := joinRaw(t, addr, chattest.Name("bob"))
			a.expect(message{Event: "arrived", Body: raw.name})
			// A good frame first, in the same write: it must still count.
			good := frame(0x81, `{"body": "before"}`)
			_, err := raw.conn.Write(slices.Concat(append([][]byte{good}, tc.frames...)...))
			require.NoError(t, err)
			a.expect(says(raw.name, "before"))
			ms, err := raw.nextMessages()
			require.NoError(t, err)
			require.Equal(t, says(raw.name, "before"), ms[0].as(message{}))
			if len(ms) == 1 {
				ms, err = raw.nextMessages()
				require.NoError(t, err)
			} else {
				ms = ms[1:]
			}
			assert.Equal(t, []message{{Event: "bye", Body: tc.reason}}, bare(ms), "after the %s frame", tc.name)
			a.expect(message{Event: "left", Body: raw.name})
		})
	}
}

// header reads the three sizes of length, masked or not, however far the
// header has come.
func TestHeaderSizesAndLengths(t *testing.T) {
	chattest.OwnCode(t)
	for _, tc := range []struct {
		h             []byte
		size          int
		length        int64
		lengthIsKnown bool
	}{
		{[]byte{0x81}, 0, 0, false},
		{[]byte{0x81, 0x05}, 2, 5, true},
		{[]byte{0x81, 0x85}, 6, 0, false},
		{[]byte{0x81, 0x85, 1, 2, 3, 4}, 6, 5, true},
		{[]byte{0x81, 0xFE, 0x01}, 8, 0, false},
		{[]byte{0x81, 0xFE, 0x01, 0x2C, 1, 2, 3, 4}, 8, 300, true},
		{[]byte{0x82, 0x7F, 0, 0, 0, 0, 0, 1, 0, 0}, 10, 65536, true},
		{[]byte{0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4}, 14, 1, true}, // the top bit is ignored
	} {
		size, length := header(tc.h)
		assert.Equal(t, tc.size, size, "header % x", tc.h)
		if tc.lengthIsKnown {
			assert.Equal(t, tc.length, length, "header % x", tc.h)
		}
	}
}
