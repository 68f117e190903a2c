package main

import (
	"context"
	"fmt"
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

// Run with step 5's, to compare, in one run:
//
//	go test -run '^$' -bench 'FanOut100Clients10Senders|Latency' ./step5-websocket ./step6-cluster
//
// The same load as step 5's benchmarks of the same names: 100 clients, 10
// of them senders. Here the clients are on one server, or spread over
// three (34, 33, 33; senders on all three), which share one NATS in the
// test process.
func BenchmarkFanOut100Clients10Senders(b *testing.B) {
	deliver(b, servers(b, 1), 200, 0)
}

func BenchmarkFanOut100Clients10SendersOn3Servers(b *testing.B) {
	deliver(b, servers(b, 3), 200, 0)
}

// 10 senders, a message every 10ms each, to 100 clients: 100,000
// deliveries/s.
func BenchmarkLatencyAt100kDeliveriesPerSecond(b *testing.B) {
	deliver(b, servers(b, 1), 100, 10*time.Millisecond)
}

func BenchmarkLatencyAt100kDeliveriesPerSecondOn3Servers(b *testing.B) {
	deliver(b, servers(b, 3), 100, 10*time.Millisecond)
}

// servers starts NATS and n servers sharing it, and returns their
// addresses.
func servers(b *testing.B, n int) []string {
	_, s := startCluster(b, n, defaults)
	var addrs []string
	for _, srv := range s {
		addrs = append(addrs, srv.addr)
	}
	return addrs
}

// deliver is step 5's benchmark of the same name, with client i on server
// i mod len(addrs). Each of the 10 senders sends perSender messages per
// b.N, flooding (as fast as their own echoes come back, at most 64
// unanswered each) when pace is 0, else one every pace. Every client must
// receive every message. It reports the latency from send to receive, p50
// and p99.
func deliver(b *testing.B, addrs []string, perSender int, pace time.Duration) {
	const clients, senders, window = 100, 10, 64

	conns := make([]*websocket.Conn, clients)
	names := make([]string, clients)
	for i := range conns {
		ws, err := dialWS(addrs[i%len(addrs)])
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
	chattest.MeasureDeliveries(b, total*clients, func() error {
		var readers, writers sync.WaitGroup
		for i := range clients {
			readers.Go(func() {
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

// dialWS opens a WebSocket to the server at addr, as the page would.
func dialWS(addr string) (*websocket.Conn, error) {
	cfg, err := websocket.NewConfig("ws://"+addr+"/ws", "http://"+addr)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*chattest.Timeout)
	defer cancel()
	return cfg.DialContext(ctx)
}
