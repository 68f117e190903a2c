package main

import (
	"bufio"
	"bytes"
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"golang.org/x/net/websocket"
)

// page holds the chat's web page, built into the program: the HTML, and
// its style and script in files of their own (see the policy in guard).
//
//go:embed index.html style.css chat.js
var page embed.FS

const (
	maxFrame   = 8192                   // the largest frame a client may send, in bytes
	maxBody    = 1000                   // the longest message, in characters
	byeTimeout = 500 * time.Millisecond // for the last writes, once the server stops
)

// newServer is the chat's HTTP server: the page at /, and at /ws the
// WebSocket, which chat runs in the request's goroutine. wait refuses new
// WebSockets, and waits for the others to end. idle bounds every silence,
// and maxConns the WebSockets open at once.
func newServer(ctx context.Context, origin string, idle time.Duration, maxConns int, chat func(*websocket.Conn)) (srv *http.Server, wait func()) {
	// Each WebSocket holds running for reading. Lock waits for them all, and
	// from its call on, TryRLock fails: net/http may yet start a handler.
	var running sync.RWMutex
	seats := make(chan struct{}, maxConns) // a token per open WebSocket
	mux := http.NewServeMux()
	mux.Handle("GET /", http.FileServerFS(page))
	mux.HandleFunc("GET /ws", func(w http.ResponseWriter, req *http.Request) {
		if !running.TryRLock() {
			http.Error(w, "server is shutting down", http.StatusServiceUnavailable)
			return
		}
		defer running.RUnlock()
		select {
		case seats <- struct{}{}:
			defer func() { <-seats }()
		default:
			http.Error(w, "server is full", http.StatusServiceUnavailable)
			return
		}
		h := &hijacker{ResponseWriter: w, idle: idle}
		ws := websocket.Server{Handshake: sameOrigin(origin), Handler: func(ws *websocket.Conn) {
			// Once ctx is cancelled, the goodbye has byeTimeout to go out.
			defer context.AfterFunc(ctx, func() { h.conn.cut(time.Now().Add(byeTimeout)) })()
			defer keepAlive(ws, idle/2)()
			chat(ws)
		}}
		ws.ServeHTTP(h, req)
	})
	return &http.Server{
		Handler:           guard(origin, mux),
		ReadHeaderTimeout: 10 * time.Second, // to send a request's headers
		WriteTimeout:      10 * time.Second, // to take a response (not a WebSocket's)
		IdleTimeout:       idle,             // between two requests on one connection
		MaxHeaderBytes:    64 << 10,
	}, running.Lock
}

// guard refuses a request for a host we do not serve, and tells the
// browser what the page may do: run the scripts and styles it loads from
// us, and nothing inline (so HTML that slips into a message cannot run);
// never be framed by another site (clickjacking); and never guess a
// file's type from its content.
func guard(origin string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if !servedHost(req.Host, origin) {
			http.Error(w, fmt.Sprintf("host %q is not served here", req.Host), http.StatusForbidden)
			return
		}
		w.Header().Set("Content-Security-Policy", "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
		w.Header().Set("X-Frame-Options", "DENY")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		next.ServeHTTP(w, req)
	})
}

// servedHost reports whether a request's Host is ours: an IP address,
// localhost, or the host of -origin. A page from evil.example whose name
// the attacker points at 127.0.0.1 (DNS rebinding) sends Host:
// evil.example, and its origin matches it: only this check stops it.
func servedHost(hostport, origin string) bool {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		host = strings.Trim(hostport, "[]") // no port
	}
	u, err := url.Parse(origin)
	return host == "" || net.ParseIP(host) != nil || strings.EqualFold(host, "localhost") ||
		origin != "" && err == nil && strings.EqualFold(host, u.Hostname())
}

// sameOrigin refuses (403) the handshake of another site's page: a browser
// lets any page open a WebSocket to any server, with the user's cookies.
// Clients that are not browsers send no Origin.
func sameOrigin(allowed string) func(*websocket.Config, *http.Request) error {
	return func(_ *websocket.Config, req *http.Request) error {
		switch origin := req.Header.Get("Origin"); origin {
		case "", "http://" + req.Host, "https://" + req.Host, allowed:
			return nil
		default:
			return fmt.Errorf("origin %q is not allowed", origin)
		}
	}
}

// keepAlive pings the client every interval until stop is called: the
// pongs that browsers send back by themselves are what keeps a quiet
// reader from being idle (see tcpConn). x/net/websocket has no Ping
// method, but a Codec's Marshal picks the frame's opcode, and Send writes
// the frame under the write lock, as every frame.
func keepAlive(ws *websocket.Conn, interval time.Duration) (stop func()) {
	ping := websocket.Codec{Marshal: func(any) ([]byte, byte, error) {
		return nil, websocket.PingFrame, nil
	}}
	var mu sync.Mutex // held while the timer is set or stopped
	mu.Lock()
	defer mu.Unlock()
	var t *time.Timer
	t = time.AfterFunc(interval, func() {
		err := ping.Send(ws, nil) // fails at once once the connection is closed
		mu.Lock()
		defer mu.Unlock()
		if err == nil && t != nil {
			t.Reset(interval)
		}
	})
	return func() { mu.Lock(); t.Stop(); t = nil; mu.Unlock() }
}

// hijacker hands x/net/websocket a tcpConn when it takes the connection
// over from net/http.
type hijacker struct {
	http.ResponseWriter
	idle time.Duration
	conn *tcpConn // once hijacked
}

func (h *hijacker) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, rw, err := http.NewResponseController(h.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	// What the client sent after its request, already read by net/http.
	early, _ := rw.Reader.Peek(rw.Reader.Buffered())
	h.conn = &tcpConn{Conn: conn, idle: h.idle,
		in: io.MultiReader(bytes.NewReader(bytes.Clone(early)), conn)}
	conn.SetReadDeadline(time.Now().Add(h.idle)) // if this fails, so will Read
	// net/http's buffers, now on tcpConn.
	rw.Reader.Reset(h.conn)
	rw.Writer.Reset(h.conn)
	return h.conn, rw, nil
}

// tcpConn is a client's TCP connection as x/net/websocket uses it. The
// library answers pings and swallows pongs without telling us, and takes
// frames we cannot read as it should; so tcpConn follows the frames'
// headers in the bytes it passes on:
//   - each time a frame ends, any frame, pongs included, the client has
//     idle more to send the next one: a quiet reader that answers pings
//     stays, and one that dribbles bytes without ever ending a frame goes;
//   - a frame the server cannot read (see refuse) ends the input with a
//     badFrame, which the client is told.
//
// And every write, ours and the library's (pongs, the close frame), gets
// writeTimeout of its own, ending no later than the cutoff, if set.
type tcpConn struct {
	net.Conn
	in   io.Reader // what net/http had read ahead, then Conn
	idle time.Duration
	head []byte // the frame header read so far
	left int64  // payload bytes still to come, once head is whole
	bad  error  // a frame refused: Read's error from then on

	mu     sync.Mutex // for cutoff
	cutoff time.Time
}

func (c *tcpConn) Read(p []byte) (int, error) {
	if c.bad != nil {
		return 0, c.bad
	}
	n, err := c.in.Read(p)
	ended := false
	for i := 0; i < n; {
		if c.left > 0 { // in a payload
			k := min(c.left, int64(n-i))
			c.left -= k
			i += int(k)
			ended = ended || c.left == 0
			continue
		}
		if len(c.head) == 0 { // a new frame
			if reason := refuse(p[i]); reason != "" {
				c.bad = badFrame(reason)
				n, err = i, nil // pass on the frames before it
				break
			}
		}
		c.head = append(c.head, p[i])
		i++
		if size, length, ok := header(c.head); ok && len(c.head) == size {
			c.head, c.left = c.head[:0], length
			ended = ended || length == 0
		}
	}
	if ended {
		c.Conn.SetReadDeadline(time.Now().Add(c.idle)) // if this fails, so will Read
	}
	if n == 0 && c.bad != nil {
		return 0, c.bad
	}
	return n, err
}

// refuse says why a frame starting with b is refused, or "". The library
// would take all these: it reads each fragment as a message of its own,
// ignores the reserved bits, and reads reserved opcodes and binary frames
// as text.
func refuse(b byte) string {
	switch op := b & 0x0F; {
	case b&0x70 != 0:
		return "frame has reserved bits set (no extension was agreed)"
	case op >= 3 && op <= 7 || op >= 11:
		return fmt.Sprintf("frame has a reserved opcode (%d)", op)
	case op == websocket.BinaryFrame:
		return "binary frames are not accepted: send JSON in a text frame"
	case op == websocket.ContinuationFrame || b&0x80 == 0:
		return "fragmented messages are not accepted: send each in one frame"
	}
	return ""
}

// header reads a frame header as far as it has come: its size in bytes
// and the payload's length, once it knows them (RFC 6455, section 5.2).
func header(h []byte) (size int, length int64, ok bool) {
	if len(h) < 2 {
		return 0, 0, false
	}
	size, length = 2, int64(h[1]&0x7F)
	switch length {
	case 126:
		size += 2
	case 127:
		size += 8
	}
	if h[1]&0x80 != 0 { // masked: a 4-byte key follows
		size += 4
	}
	if len(h) < size {
		return size, 0, true
	}
	switch length {
	case 126:
		length = int64(h[2])<<8 | int64(h[3])
	case 127:
		length = 0
		for _, b := range h[2:10] {
			length = length<<8 | int64(b)
		}
		length &= 1<<63 - 1
	}
	return size, length, true
}

func (c *tcpConn) Write(p []byte) (int, error) {
	if err := c.SetWriteDeadline(time.Now().Add(writeTimeout)); err != nil {
		return 0, err
	}
	return c.Conn.Write(p)
}

// SetWriteDeadline sets the deadline, never later than the cutoff.
func (c *tcpConn) SetWriteDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.cutoff.IsZero() && (t.IsZero() || t.After(c.cutoff)) {
		t = c.cutoff
	}
	return c.Conn.SetWriteDeadline(t)
}

// cut makes every write, the one under way too, end by t.
func (c *tcpConn) cut(t time.Time) {
	c.mu.Lock()
	c.cutoff = t
	c.mu.Unlock()
	c.SetWriteDeadline(t) // if this fails, so will Write
}

// wsConn is a client's WebSocket as its writer sees it. Write sends a batch
// of encoded messages, "a,b,", as one text frame, [a,b], under the lock that
// x/net/websocket's own frames (pongs, pings, the close frame) take too:
// frames never mix.
type wsConn struct{ *websocket.Conn }

func (c wsConn) Write(batch []byte) (int, error) {
	array := buffers.Get().(*bytes.Buffer)
	defer func() { array.Reset(); buffers.Put(array) }()
	array.WriteByte('[')
	array.Write(batch[:len(batch)-1]) // all but the last comma
	array.WriteByte(']')
	if _, err := c.Conn.Write(array.Bytes()); err != nil {
		return 0, err
	}
	return len(batch), nil
}

// frames reads a client's messages as bufio.Scanner reads lines: Scan
// waits for the next one, a message in JSON, and Text is its body (tcpConn
// ends the wait once the client is idle). Err says why Scan stopped; a
// badFrame is told to the client.
type frames struct {
	ws  *websocket.Conn
	msg message
	err error
}

func (f *frames) Scan() bool {
	f.ws.MaxPayloadBytes = maxFrame // else one frame could fill the memory
	f.msg = message{}
	err := websocket.JSON.Receive(f.ws, &f.msg) // fails if the client is gone or idle
	switch n := utf8.RuneCountInString(f.msg.Body); {
	case errors.Is(err, websocket.ErrFrameTooLarge):
		err = badFrame(fmt.Sprintf("frame too large (max %d bytes)", maxFrame))
	case errors.As(err, new(*json.SyntaxError)), errors.As(err, new(*json.UnmarshalTypeError)):
		err = badFrame(`frame is not JSON of the form {"body": "..."}`)
	case err == nil && n == 0:
		err = badFrame("body is missing or empty")
	case err == nil && n > maxBody:
		err = badFrame(fmt.Sprintf("body is too long (max %d characters)", maxBody))
	}
	f.err = err
	return err == nil
}

func (f *frames) Text() string { return f.msg.Body }
func (f *frames) Err() error   { return f.err }

// badFrame is why a client's frame was refused.
type badFrame string

func (b badFrame) Error() string { return string(b) }
