package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"gochat-steps/internal/chattest"

	"golang.org/x/net/websocket"
)

// Run with: go test -run '^$' -bench . ./step5-websocket
func BenchmarkFanOut100Clients10Senders(b *testing.B) {
	fanOut(b, serveInProcess(b, false), nil)
}

// The same server, with connections that write one frame per system call:
// what a server gets that writes through x/net/websocket's own Write.
func BenchmarkFanOutNaiveOneWritePerFrame(b *testing.B) {
	fanOut(b, serveInProcess(b, true), nil)
}

// The same against the program in a child process, to measure the
// server's own CPU time per delivery.
func BenchmarkServerCPU(b *testing.B) {
	server := chattest.StartProcess(b, "-addr", "127.0.0.1:0")
	fanOut(b, server.Addr, server.CPU)
}

// 10 senders, a message every 10ms each, to 100 clients: 100,000
// deliveries/s.
func BenchmarkLatencyAt100kDeliveriesPerSecond(b *testing.B) {
	deliver(b, serveInProcess(b, false), 100, 10*time.Millisecond, nil)
}

// serveInProcess runs the server until the benchmark ends, and returns
// its address. With naive set, its connections write one frame per
// system call.
func serveInProcess(b *testing.B, naive bool) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	if naive {
		ln = naiveListener{ln}
	}
	return chattest.StartOn(b, ln, func(ctx context.Context, ln net.Listener) error {
		return serve(ctx, ln, defaults)
	})
}

// naiveListener's connections write each WebSocket frame with a system
// call of its own.
type naiveListener struct{ net.Listener }

func (l naiveListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return naiveConn{c}, nil
}

type naiveConn struct{ net.Conn }

func (c naiveConn) Write(p []byte) (int, error) {
	if bytes.HasPrefix(p, []byte("HTTP/")) {
		return c.Conn.Write(p) // the handshake's response, not frames
	}
	n := 0
	for len(p) > 0 {
		// A server's frame: two bytes, the length's extension, the payload.
		size := 2 + int(p[1])
		switch p[1] {
		case 126:
			size = 4 + int(binary.BigEndian.Uint16(p[2:]))
		case 127:
			size = 10 + int(binary.BigEndian.Uint64(p[2:]))
		}
		m, err := c.Conn.Write(p[:size])
		n += m
		if err != nil {
			return n, err
		}
		p = p[size:]
	}
	return n, nil
}

// fanOut has 100 clients join the server at addr, and 10 of them send
// as fast as their own echoes come back (at most 64 unanswered each).
// With serverCPU, it also reports the server's CPU time per delivery.
func fanOut(b *testing.B, addr string, serverCPU func() time.Duration) {
	deliver(b, addr, 200, 0, serverCPU)
}

// deliver is fanOut, flooding, when pace is 0; otherwise each sender
// sends a message every pace. Each sender sends perSender messages per
// b.N, and every client must receive every message. It reports the
// latency from send to receive, p50 and p99.
func deliver(b *testing.B, addr string, perSender int, pace time.Duration, serverCPU func() time.Duration) {
	const clients, senders, window = 100, 10, 64

	conns := make([]*websocket.Conn, clients)
	names := make([]string, clients)
	for i := range conns {
		ws, err := dialWS(addr, nil)
		if err != nil {
			b.Fatal(err)
		}
		defer ws.Close()
		conns[i], names[i] = ws, fmt.Sprint("u", i)
		if err := websocket.JSON.Send(ws, message{Body: names[i]}); err != nil {
			b.Fatal(err)
		}
	}
	// Everyone is in once the last one's arrival has reached the first.
	if err := conns[0].SetReadDeadline(time.Now().Add(chattest.Timeout)); err != nil {
		b.Fatal(err)
	}
	for {
		var m message
		if err := websocket.JSON.Receive(conns[0], &m); err != nil {
			b.Fatal(err)
		}
		if m.Event == "arrived" && m.Body == names[clients-1] {
			break
		}
	}

	total := b.N * perSender * senders // messages every client must receive
	padding := strings.Repeat("x", 20)
	echoes := make([]atomic.Int64, senders)
	wake := make([]chan struct{}, senders) // a sender waits here for its echoes
	for i := range wake {
		wake[i] = make(chan struct{}, 1)
	}
	latencies := make([][]time.Duration, clients)
	var failed chattest.FirstError
	var cpu time.Duration
	chattest.MeasureDeliveries(b, total*clients, func() error {
		if serverCPU != nil {
			cpu -= serverCPU()
			defer func() { cpu += serverCPU() }()
		}
		var readers, writers sync.WaitGroup
		for i := range clients {
			readers.Go(func() {
				// The clients read frames without decoding their JSON: they
				// stand in for browsers, which decode JSON natively, and
				// should cost as little as they can next to the server.
				var f []byte
				for got := 0; got < total; {
					if err := conns[i].SetReadDeadline(time.Now().Add(chattest.Timeout)); err != nil {
						failed.Set(err)
						return
					}
					if err := websocket.Message.Receive(conns[i], &f); err != nil {
						failed.Set(fmt.Errorf("client %d after %d of %d: %w", i, got, total, err))
						return
					}
					author, body, ok := chatMessage(f)
					if !ok {
						continue // an arrival or the like
					}
					got++
					if got%16 == 0 { // sample the latency
						sent, _, _ := strings.Cut(body, " ")
						nanos, _ := strconv.ParseInt(sent, 10, 64)
						latencies[i] = append(latencies[i], time.Since(time.Unix(0, nanos)))
					}
					if i < senders && author == names[i] {
						echoes[i].Add(1)
						select {
						case wake[i] <- struct{}{}:
						default:
						}
					}
				}
			})
		}
		for i := range senders {
			writers.Go(func() {
				var tick <-chan time.Time
				if pace > 0 {
					t := time.NewTicker(pace)
					defer t.Stop()
					tick = t.C
				}
				for sent := 0; sent < b.N*perSender; sent++ {
					if tick != nil {
						<-tick
					}
					for int64(sent)-echoes[i].Load() >= window {
						select {
						case <-wake[i]:
						case <-time.After(chattest.Timeout):
							failed.Set(fmt.Errorf("sender %d: no echo for %v", i, chattest.Timeout))
							return
						}
					}
					body := fmt.Sprint(time.Now().UnixNano(), " ", padding)
					if err := websocket.JSON.Send(conns[i], message{Body: body}); err != nil {
						failed.Set(err)
						return
					}
				}
			})
		}
		writers.Wait()
		readers.Wait()
		return failed.Err()
	})
	if serverCPU != nil {
		b.ReportMetric(float64(cpu.Nanoseconds())/float64(total*clients), "server-CPU-ns/delivery")
	}
	all := slices.Concat(latencies...)
	slices.Sort(all)
	b.ReportMetric(float64(all[len(all)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(all[len(all)*99/100].Microseconds()), "p99-µs")
}

// chatMessage picks the author and body out of a chat message's frame, as
// the server writes it: {"author":"…","body":"…"}. Notices (arrivals and
// the like) have no author, and are not chat messages.
func chatMessage(f []byte) (author, body string, ok bool) {
	rest, ok := strings.CutPrefix(string(f), `{"author":"`)
	if !ok {
		return "", "", false
	}
	author, rest, _ = strings.Cut(rest, `","body":"`)
	body, _, _ = strings.Cut(rest, `"`)
	return author, body, author != ""
}

// idleArgs run the program for idle clients: they are not disconnected
// for being idle while they are measured.
var idleArgs = []string{"-addr", "127.0.0.1:0", "-idle", "1h"}

// 5,000 clients joining at the same moment: the target is all of them in
// within 5 s. The memory it reports is inflated by the burst.
func BenchmarkJoin5000AtOnce(b *testing.B) {
	chattest.IdleMemory(b, 5000, 5000, idleArgs, wsJoin)
}

// 5,000 clients arriving 100 at a time, then idle: memory per idle client.
func BenchmarkIdleMemory(b *testing.B) {
	chattest.IdleMemory(b, 5000, 100, idleArgs, wsJoin)
}

// wsJoin joins the server at addr as client i, and waits for its welcome.
func wsJoin(addr string, i int) (io.Closer, error) {
	ws, err := dialWS(addr, chattest.BigBuffers)
	if err != nil {
		return nil, err
	}
	if err := ws.SetDeadline(time.Now().Add(3 * chattest.Timeout)); err != nil {
		return ws, err
	}
	name := fmt.Sprint("u", i)
	if err := websocket.JSON.Send(ws, message{Body: name}); err != nil {
		return ws, err
	}
	var m message
	err = websocket.JSON.Receive(ws, &m)
	if err == nil && m != (message{Event: "welcome", Body: name}) {
		err = fmt.Errorf("expected a welcome, got %+v", m)
	}
	return ws, err
}

// dialWS opens a WebSocket to the server at addr, as the page would, with
// dialer (nil for a default one), and gives up after 3*chattest.Timeout.
func dialWS(addr string, dialer *net.Dialer) (*websocket.Conn, error) {
	cfg, err := websocket.NewConfig("ws://"+addr+"/ws", "http://"+addr)
	if err != nil {
		return nil, err
	}
	cfg.Dialer = dialer
	ctx, cancel := context.WithTimeout(context.Background(), 3*chattest.Timeout)
	defer cancel()
	return cfg.DialContext(ctx)
}
