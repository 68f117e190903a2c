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
// its script and style sheet in files of their own (see the policy in guard).
//
//go:embed index.html chat.js chat.css
var page embed.FS

const (
	maxFrame   = 8192                   // the largest frame a client may send, in bytes
	maxBody    = 1000                   // the longest message, in characters
	byeTimeout = 500 * time.Millisecond // for the goodbye, once the server stops
)

// newServer is the chat's HTTP server: the page at /, and at /ws the
// WebSocket, which chat runs in the request's goroutine. wait refuses new
// WebSockets, and waits for the others to end.
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
			defer context.AfterFunc(ctx, func() { time.AfterFunc(byeTimeout, func() { h.conn.Close() }) })()
			defer keepAlive(ws, idle/2)()
			chat(ws)
		}}
		ws.ServeHTTP(h, req)
	})
	return &http.Server{Handler: guard(origin, mux), MaxHeaderBytes: 64 << 10,
		ReadHeaderTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second, IdleTimeout: idle,
	}, running.Lock
}

// guard serves only the hosts we are known by, and tells the browser to
// run no inline script or style, to let no other site frame the page, and
// to take each file for the type we say.
func guard(origin string, next http.Handler) http.Handler {
	u, err := url.Parse(origin)
	if err != nil {
		u = &url.URL{} // no host
	}
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		host, _, err := net.SplitHostPort(req.Host)
		if err != nil {
			host = strings.Trim(req.Host, "[]") // no port
		}
		// Host names are case-insensitive: LOCALHOST is localhost. An empty
		// Host (HTTP/1.0 clients send none) names no other site.
		if !(net.ParseIP(host) != nil || strings.EqualFold(host, "localhost") || strings.EqualFold(host, u.Hostname()) || host == "") {
			http.Error(w, fmt.Sprintf("host %q is not served here", host), http.StatusForbidden)
			return
		}
		w.Header().Set("Content-Security-Policy", "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
		w.Header().Set("X-Frame-Options", "DENY")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		next.ServeHTTP(w, req)
	})
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

// ping is a codec whose Send writes a ping: x/net/websocket has no Ping.
var ping = websocket.Codec{Marshal: func(any) ([]byte, byte, error) { return nil, websocket.PingFrame, nil }}

// keepAlive pings the client every interval, from a timer, until stop.
func keepAlive(ws *websocket.Conn, interval time.Duration) (stop func()) {
	var mu sync.Mutex // t is set before the timer runs, and nil once stopped
	mu.Lock()
	defer mu.Unlock()
	var t *time.Timer
	t = time.AfterFunc(interval, func() {
		err := ping.Send(ws, nil)
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
	early, _ := rw.Reader.Peek(rw.Reader.Buffered()) // read past the request
	h.conn = &tcpConn{Conn: conn, idle: h.idle, in: io.MultiReader(bytes.NewReader(bytes.Clone(early)), conn)}
	conn.SetReadDeadline(time.Now().Add(h.idle)) // if this fails, so will Read
	rw.Reader.Reset(h.conn)                      // net/http's buffers, on tcpConn
	rw.Writer.Reset(h.conn)
	return h.conn, rw, nil
}

// tcpConn is a client's TCP connection under x/net/websocket, which
// answers pings, drops pongs, and misreads some frames without a word to
// us. So Read follows the frames' headers: each time a frame ends, pongs
// included, the client has idle more to end the next one; and a frame
// that refuse turns away ends the input with a badFrame. Write gives
// every write, the library's too, a deadline of its own.
type tcpConn struct {
	net.Conn
	in   io.Reader // what net/http had read ahead, then Conn
	idle time.Duration
	head []byte // the frame header read so far
	left int64  // payload bytes still to come, once head is whole
	bad  error  // a frame refused: Read's error from then on
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
			c.left, i = c.left-k, i+int(k)
			ended = ended || c.left == 0
			continue
		}
		if len(c.head) == 0 && refuse(p[i]) != "" {
			c.bad, n, err = badFrame(refuse(p[i])), i, nil // pass on the frames before it
			break
		}
		c.head, i = append(c.head, p[i]), i+1
		if size, length := header(c.head); len(c.head) == size {
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
// would read each fragment as a message, ignore the reserved bits, and
// read binary frames and reserved opcodes as text.
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

// header returns the size of a frame header, h so far (0 until two bytes
// are in), and once it is whole, the payload's length (RFC 6455, 5.2).
func header(h []byte) (size int, length int64) {
	if len(h) < 2 {
		return 0, 0
	}
	length, ext := int64(h[1]&0x7F), 0 // ext: bytes of extended length
	switch length {
	case 126:
		ext = 2
	case 127:
		ext = 8
	}
	size = 2 + ext + 4*int(h[1]>>7) // masked: a 4-byte key follows
	if len(h) < size || ext == 0 {
		return size, length
	}
	length = 0
	for _, b := range h[2 : 2+ext] {
		length = length<<8 | int64(b)
	}
	return size, length & (1<<63 - 1)
}

// Write gives every write, ours, pings, pongs and the close frame,
// writeTimeout of its own.
func (c *tcpConn) Write(p []byte) (int, error) {
	c.SetWriteDeadline(time.Now().Add(writeTimeout)) // if this fails, so will Write
	return c.Conn.Write(p)
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

// wsConn is a client's WebSocket as its writer sees it. Write sends a batch
// of encoded messages, "a,b,", as one text frame, [a,b], under the write lock
// that x/net/websocket's own frames take too: frames never mix.
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
