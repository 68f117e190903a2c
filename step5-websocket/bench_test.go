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

// The same server, with connections that write each message as a frame of
// its own, with a system call of its own: what a server gets that writes
// each message with x/net/websocket's Write, as it comes.
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
// its address. With naive set, its connections write one message per
// frame and system call.
func serveInProcess(b *testing.B, naive bool) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	if naive {
		ln = naiveListener{ln}
	}
	return chattest.StartOn(b, ln, func(ctx context.Context, ln net.Listener) error {
		return serve(ctx, ln, defaults.idle, defaults.history, defaults.origin, defaults.maxConns)
	})
}

// naiveListener's connections split each frame of the server's, a JSON
// array of messages, into frames of one message each, and write each with
// a system call of its own.
type naiveListener struct{ net.Listener }

func (l naiveListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &naiveConn{Conn: c}, nil
}

type naiveConn struct {
	net.Conn
	upgraded bool   // the handshake is done: what follows is frames
	pending  []byte // written, but not yet a whole frame
	out      []byte // a frame being written
}

func (c *naiveConn) Write(p []byte) (int, error) {
	if !c.upgraded {
		c.upgraded = bytes.HasPrefix(p, []byte("HTTP/1.1 101 "))
		return c.Conn.Write(p) // HTTP, not frames
	}
	c.pending = append(c.pending, p...)
	for {
		head, size := frameSize(c.pending)
		if size == 0 || size > len(c.pending) {
			return len(p), nil // the rest of the frame is still to come
		}
		if err := c.writeSplit(c.pending[:size], head); err != nil {
			return 0, err
		}
		c.pending = c.pending[:copy(c.pending, c.pending[size:])]
	}
}

// writeSplit writes a text frame holding [a,b,...] as frames [a], [b], ...;
// any other frame as it is.
func (c *naiveConn) writeSplit(frame []byte, head int) error {
	payload := frame[head:]
	if frame[0] != 0x81 || len(payload) < 2 || payload[0] != '[' {
		_, err := c.Conn.Write(frame)
		return err
	}
	rest := payload[1 : len(payload)-1]
	for len(rest) > 0 {
		// Messages are objects, and json.Marshal escapes every '"' in a
		// string: `},{"` is found only between two messages.
		msg := rest
		if i := bytes.Index(rest, []byte(`},{"`)); i >= 0 {
			msg, rest = rest[:i+1], rest[i+2:]
		} else {
			rest = nil
		}
		c.out = append(frameHeader(c.out[:0], len(msg)+2), '[')
		c.out = append(append(c.out, msg...), ']')
		if _, err := c.Conn.Write(c.out); err != nil {
			return err
		}
	}
	return nil
}

// frameSize reads the header of a server's frame, which is not masked: the
// header's size, and the whole frame's; 0 if the header is not all there.
func frameSize(f []byte) (head, size int) {
	if len(f) < 2 {
		return 0, 0
	}
	switch n := int(f[1] & 0x7F); {
	case n < 126:
		return 2, 2 + n
	case n == 126 && len(f) >= 4:
		return 4, 4 + int(binary.BigEndian.Uint16(f[2:]))
	case n == 127 && len(f) >= 10:
		return 10, 10 + int(binary.BigEndian.Uint64(f[2:]))
	}
	return 0, 0
}

// frameHeader appends the header of a text frame from the server, for a
// payload of n bytes (RFC 6455, section 5.2).
func frameHeader(f []byte, n int) []byte {
	switch {
	case n < 126:
		return append(f, 0x81, byte(n))
	case n < 1<<16:
		return binary.BigEndian.AppendUint16(append(f, 0x81, 126), uint16(n))
	default:
		return binary.BigEndian.AppendUint64(append(f, 0x81, 127), uint64(n))
	}
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
	for in := false; !in; {
		var ms []message
		if err := websocket.JSON.Receive(conns[0], &ms); err != nil {
			b.Fatal(err)
		}
		in = slices.ContainsFunc(ms, func(m message) bool { return m.is(message{Event: "arrived", Body: names[clients-1]}) })
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
				got := 0
				heard := func(author, body string) {
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
				for got < total {
					if err := conns[i].SetReadDeadline(time.Now().Add(chattest.Timeout)); err != nil {
						failed.Set(err)
						return
					}
					if err := websocket.Message.Receive(conns[i], &f); err != nil {
						failed.Set(fmt.Errorf("client %d after %d of %d: %w", i, got, total, err))
						return
					}
					chatMessages(f, heard)
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

// chatMessages calls heard with the author and body of each chat message
// in a frame, as the server writes them: [{"author":"…","body":"…"},…].
// Notices (arrivals and the like) have no author, and are skipped. The
// bodies here have no '"' in them.
func chatMessages(f []byte, heard func(author, body string)) {
	const start = `{"author":"`
	rest := string(f)
	for {
		i := strings.Index(rest, start)
		if i < 0 {
			return
		}
		author, after, _ := strings.Cut(rest[i+len(start):], `","body":"`)
		body, after, _ := strings.Cut(after, `"`)
		if author != "" {
			heard(author, body)
		}
		rest = after
	}
}

// idleArgs run the program for idle clients: they are not disconnected
// for being idle while they are measured, and all 5,000 get a seat.
var idleArgs = []string{"-addr", "127.0.0.1:0", "-idle", "1h", "-maxconns", "5000"}

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
	// The first frame starts with the welcome (its time and list of who is
	// here follow). It may hold arrivals after it: they are not decoded,
	// to leave the cores to the server.
	var f []byte
	err = websocket.Message.Receive(ws, &f)
	if want := `[{"author":"","body":"` + name + `","event":"welcome",`; err == nil && !bytes.HasPrefix(f, []byte(want)) {
		err = fmt.Errorf("expected a frame starting with %s, got %.100s", want, f)
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
