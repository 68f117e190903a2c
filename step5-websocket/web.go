package main

import (
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"
	"unicode/utf8"

	"golang.org/x/net/websocket"
)

// page holds the chat's web page, built into the program: index.html, and
// the script and style sheet it loads.
//
//go:embed index.html chat.js chat.css
var page embed.FS

// newServer is the chat's HTTP server: the page at /, and at /ws the
// WebSocket, which chat runs in the request's goroutine. wait refuses new
// WebSockets, and waits for the others to end.
func newServer(origin string, chat func(*websocket.Conn)) (srv *http.Server, wait func()) {
	// Each WebSocket holds running for reading. Lock waits for them all, and
	// from its call on, TryRLock fails: net/http may yet start a handler.
	var running sync.RWMutex
	ws := websocket.Server{Handshake: sameOrigin(origin), Handler: chat}
	mux := http.NewServeMux()
	mux.Handle("GET /", http.FileServerFS(page))
	mux.HandleFunc("GET /ws", func(w http.ResponseWriter, req *http.Request) {
		if !running.TryRLock() {
			http.Error(w, "server is shutting down", http.StatusServiceUnavailable)
			return
		}
		defer running.RUnlock()
		ws.ServeHTTP(w, req)
	})
	return &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}, running.Lock
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

const (
	maxFrame = 8192 // the largest frame a client may send, in bytes
	maxBody  = 1000 // the longest message, in characters
)

// frames reads a client's frames as bufio.Scanner reads lines: Scan waits
// up to idle for the next one, a message in JSON, and Text is its body.
// Err says why Scan stopped; a badFrame is told to the client.
type frames struct {
	ws   *websocket.Conn
	idle time.Duration
	msg  message
	err  error
}

func (f *frames) Scan() bool {
	f.ws.MaxPayloadBytes = maxFrame              // else one frame could fill the memory
	f.ws.SetReadDeadline(time.Now().Add(f.idle)) // if this fails, so does Receive
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
