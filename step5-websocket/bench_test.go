package main

import (
	"context"
	"fmt"
	"io"
	"net"
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
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx, ln, defaults) }()
	defer func() { cancel(); <-done }()
	fanOut(b, ln.Addr().String(), nil)
}

// The same against the program in a child process, to measure the
// server's own CPU time per delivery.
func BenchmarkServerCPU(b *testing.B) {
	server := chattest.StartProcess(b, "-addr", "127.0.0.1:0")
	fanOut(b, server.Addr, server.CPU)
}

// fanOut has 100 clients join the server at addr, and 10 of them send
// as fast as their own echoes come back (at most 64 unanswered each).
// With serverCPU, it also reports the server's CPU time per delivery.
func fanOut(b *testing.B, addr string, serverCPU func() time.Duration) {
	const clients, senders, perSender, window = 100, 10, 200, 64

	conns := make([]*websocket.Conn, clients)
	for i := range conns {
		ws, err := websocket.Dial("ws://"+addr+"/ws", "", "http://"+addr)
		if err != nil {
			b.Fatal(err)
		}
		defer ws.Close()
		conns[i] = ws
		if err := websocket.JSON.Send(ws, message{Body: fmt.Sprint("u", i)}); err != nil {
			b.Fatal(err)
		}
	}
	// Everyone is in once the last one's arrival has reached the first.
	for {
		var m message
		if err := websocket.JSON.Receive(conns[0], &m); err != nil {
			b.Fatal(err)
		}
		if m.Event == "arrived" && m.Body == fmt.Sprint("u", clients-1) {
			break
		}
	}

	total := b.N * perSender * senders // messages every client must receive
	padding := strings.Repeat("x", 40)
	echoes := make([]atomic.Int64, senders)
	wake := make([]chan struct{}, senders) // a sender waits here for its echoes
	for i := range wake {
		wake[i] = make(chan struct{}, 1)
	}
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
				for got := 0; got < total; {
					if err := conns[i].SetReadDeadline(time.Now().Add(chattest.Timeout)); err != nil {
						failed.Set(err)
						return
					}
					var m message
					if err := websocket.JSON.Receive(conns[i], &m); err != nil {
						failed.Set(fmt.Errorf("client %d after %d of %d: %w", i, got, total, err))
						return
					}
					if m.Author == "" {
						continue // an arrival or the like
					}
					got++
					if i < senders && m.Author == fmt.Sprint("u", i) {
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
				for sent := 0; sent < b.N*perSender; sent++ {
					for int64(sent)-echoes[i].Load() >= window {
						select {
						case <-wake[i]:
						case <-time.After(chattest.Timeout):
							failed.Set(fmt.Errorf("sender %d: no echo for %v", i, chattest.Timeout))
							return
						}
					}
					if err := websocket.JSON.Send(conns[i], message{Body: padding}); err != nil {
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
}

func BenchmarkIdleMemory(b *testing.B) {
	chattest.IdleMemory(b, 2000, []string{"-addr", "127.0.0.1:0"}, func(addr string, i int) (io.Closer, error) {
		ws, err := websocket.Dial("ws://"+addr+"/ws", "", "http://"+addr)
		if err != nil {
			return nil, err
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
	})
}
