package main

// The classic design beside ours, under the same burst.
//
// gopl's chat (The Go Programming Language, section 8.10) gives each
// client a channel of lines, and a writer goroutine that ranges over it
// and writes each line to the connection. Its broadcaster sends to every
// client's channel, and waits while one is full: a client that stops
// reading stalls the whole room. The usual fix (gorilla/websocket's chat
// example has it) is a buffered channel and a send that never waits: a
// client whose channel is full is dropped. serveClassic below is that
// design, written anew; BenchmarkBurst runs it and our serve under the
// same load.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	"gochat-steps/internal/chattest"
)

// Run with: go test -run '^$' -bench Burst -benchtime 1x ./step2-broadcast
//
// 100 clients are in the room; 10 of them send 500 lines each, as fast as
// they can. Every client should receive all 5,000 lines: about 334 KB,
// more than our 256 KiB budget (maxPending), which counts only what waits.
// It reports the share of the deliveries that never arrived, and how many
// of the 100 clients the server dropped; it fails if ours loses any. Run
// it without -race: the race detector slows channel operations far more
// than system calls, and so changes the race this measures.
func BenchmarkBurst(b *testing.B) {
	chattest.InProcess(b) // it compares servers of its own
	const clients, senders, perSender = 100, 10, 500
	for _, bc := range []struct {
		name  string
		serve func(context.Context, net.Listener) error
		ours  bool
	}{
		{"channel-of-256-lines", serveClassic(256), false},
		{"channel-of-1024-lines", serveClassic(1024), false},
		{"our-outbox", serve, true},
	} {
		b.Run(bc.name, func(b *testing.B) {
			addr := chattest.Start(b, bc.serve)
			var lost float64
			var dropped, bursts int
			for b.Loop() {
				l, d := burst(b, addr, clients, senders, perSender)
				lost, dropped, bursts = lost+l, dropped+d, bursts+1
			}
			b.ReportMetric(100*lost/float64(bursts), "%-lost")
			b.ReportMetric(float64(dropped)/float64(bursts), "clients-dropped")
			if bc.ours && (lost > 0 || dropped > 0) {
				b.Errorf("our outbox lost %.1f%% of the deliveries and dropped %d clients: it must lose nothing", 100*lost, dropped)
			}
		})
	}
}

// serveClassic is serve with the classic design: each client has a
// channel of up to lines lines, and a client whose channel is full is
// dropped. Only classicBroadcast and the writer differ from ours.
func serveClassic(lines int) func(context.Context, net.Listener) error {
	return func(ctx context.Context, ln net.Listener) error {
		r := &classicRoom{
			lines:    lines,
			entering: make(chan *classicClient),
			messages: make(chan string),
			leaving:  make(chan *classicClient),
		}
		stopped := make(chan struct{})
		go r.broadcaster(stopped)
		var conns sync.WaitGroup
		defer func() {
			conns.Wait()
			close(r.messages)
			<-stopped
		}()
		stopAccepting := context.AfterFunc(ctx, func() { ln.Close() })
		defer stopAccepting()
		for {
			conn, err := accept(ln)
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return err
			}
			conns.Go(func() { r.handleConn(ctx, conn) })
		}
	}
}

type classicRoom struct {
	lines    int // how many lines each client's channel holds
	entering chan *classicClient
	messages chan string
	leaving  chan *classicClient
}

type classicClient struct {
	name string
	conn net.Conn
	out  chan string // lines waiting for the client's writer
}

func (r *classicRoom) broadcaster(done chan<- struct{}) {
	defer close(done)
	clients := make(map[*classicClient]bool)
	for {
		select {
		case cli := <-r.entering:
			cli.out <- "You are " + cli.name // its channel is still empty
			classicBroadcast(clients, cli.name+" has arrived")
			clients[cli] = true
		case msg, ok := <-r.messages:
			if !ok {
				return
			}
			classicBroadcast(clients, msg)
		case cli := <-r.leaving:
			if clients[cli] { // a dropped client's channel is closed already
				delete(clients, cli)
				close(cli.out)
			}
			classicBroadcast(clients, cli.name+" has left")
		}
	}
}

// classicBroadcast sends msg to every client's channel without waiting. A
// client whose channel is full is dropped: closing its channel ends its
// writer, and closing its connection ends its handleConn.
func classicBroadcast(clients map[*classicClient]bool, msg string) {
	for cli := range clients {
		select {
		case cli.out <- msg:
		default: // full
			delete(clients, cli)
			close(cli.out)
			cli.conn.Close()
		}
	}
}

func (r *classicRoom) handleConn(ctx context.Context, conn net.Conn) {
	cli := &classicClient{name: conn.RemoteAddr().String(), conn: conn, out: make(chan string, r.lines)}
	written := make(chan struct{})
	go cli.writer(written)
	defer func() { <-written }()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	r.entering <- cli
	input := newScanner(conn)
	for input.Scan() {
		r.messages <- cli.name + ": " + sanitize(input.Text())
	}
	r.leaving <- cli
}

// writer writes each line as it comes: one write, one system call, a line.
func (c *classicClient) writer(done chan<- struct{}) {
	defer close(done)
	defer c.conn.Close()
	for msg := range c.out {
		if _, err := fmt.Fprintln(c.conn, msg); err != nil {
			return // the closed conn ends handleConn's Scan too
		}
	}
}

// burst has n clients enter the room at addr. Then senders of them each
// send perSender lines in one write, while every client reads until it has
// every line, or the server hangs up on it. It returns the share of the
// deliveries that were lost, and how many clients the server dropped.
func burst(b *testing.B, addr string, n, senders, perSender int) (lost float64, dropped int) {
	clients := make([]*chattest.Client, n)
	for i := range clients {
		clients[i] = chattest.Dial(b, addr)
		defer clients[i].Close()
		clients[i].Expect("You are " + clients[i].Addr())
	}
	text := strings.Repeat("x", 40)
	var sending sync.WaitGroup
	for _, c := range clients[:senders] {
		lines := make([]string, perSender)
		for i := range lines {
			lines[i] = fmt.Sprintf("line %d %s", i, text)
		}
		sending.Go(func() { _ = c.TrySend(lines...) }) // fails if it is dropped
	}
	var got, gone atomic.Int64
	err := chattest.Concurrently(n, func(i int) error {
		lines, dropped, err := receive(clients[i], clients[:senders], perSender)
		got.Add(int64(lines))
		if dropped {
			gone.Add(1)
		}
		return err
	})
	sending.Wait()
	if err != nil {
		b.Fatal(err)
	}
	want := n * senders * perSender
	return float64(want-int(got.Load())) / float64(want), int(gone.Load())
}

// receive reads c's lines until it has all perSender lines of every sender,
// or the server hangs up on it. A sender that the server dropped has
// fewer: its departure says that no more of its lines will come. It
// returns how many lines of the senders c got, and whether it was dropped.
func receive(c *chattest.Client, senders []*chattest.Client, perSender int) (got int, dropped bool, err error) {
	waiting := map[string]int{} // sender's address -> lines still to come
	for _, s := range senders {
		waiting[s.Addr()] = perSender
	}
	for len(waiting) > 0 {
		line, err := c.ReadLine()
		if errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) {
			return got, true, nil
		}
		if err != nil {
			return got, false, fmt.Errorf("%s after %d lines: %w", c.Addr(), got, err)
		}
		if who, ok := strings.CutSuffix(line, " has left"); ok {
			delete(waiting, who)
		} else if who, _, _ := strings.Cut(line, ": "); waiting[who] > 0 {
			got++
			waiting[who]--
			if waiting[who] == 0 {
				delete(waiting, who)
			}
		}
	}
	return got, false, nil
}
