package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"gochat-steps/internal/chattest"
)

// joinAs answers the name prompt with name and waits for the welcome.
func joinAs(conn net.Conn, in *bufio.Reader, name string) error {
	prompt := make([]byte, len("Enter your username: "))
	if _, err := io.ReadFull(in, prompt); err != nil {
		return err
	}
	if _, err := fmt.Fprintf(conn, "%s\n", name); err != nil {
		return err
	}
	line, err := in.ReadString('\n')
	if err != nil || line != "welcome "+name+"\n" {
		return fmt.Errorf("expected a welcome, got %q (%v)", line, err)
	}
	return nil
}

var protocol = chattest.Protocol{
	Serve: serveForBench,
	Join: func(conn net.Conn, in *bufio.Reader, i int) (string, error) {
		name := fmt.Sprint("u", i)
		return name, joinAs(conn, in, name)
	},
	Says: func(name, text string) string { return name + " says: " + text },
}

// Run with: go test -run '^$' -bench . ./step4-exit-queue
func BenchmarkFanOut100Clients10Senders(b *testing.B) {
	chattest.FanOut(b, protocol, 100, 10, 1000, false)
}

// 10 senders, a line every 10ms each, to 100 clients: 100,000 deliveries/s.
func BenchmarkLatencyAt100kDeliveriesPerSecond(b *testing.B) {
	chattest.Steady(b, protocol, 100, 10, 100, 10*time.Millisecond)
}

// The same against the program in a child process, to measure the
// server's own CPU time per delivery.
func BenchmarkServerCPU(b *testing.B) {
	chattest.ServerCPU(b, protocol, []string{"-addr", "127.0.0.1:0"}, 100, 10, 1000)
}

func BenchmarkFanOutNaiveOneWritePerLine(b *testing.B) {
	chattest.FanOut(b, protocol, 100, 10, 1000, true)
}

// idleArgs run the program for idle clients: they are not disconnected
// for being idle while they are measured, and all 5,000 are let in.
var idleArgs = []string{"-addr", "127.0.0.1:0", "-idle", "1h", "-maxconns", "10000"}

// 5,000 clients joining at the same moment: the target is all of them in
// within 5 s. The memory it reports is inflated by the burst.
func BenchmarkJoin5000AtOnce(b *testing.B) {
	chattest.IdleMemory(b, 5000, 5000, idleArgs, tcpJoin)
}

// 5,000 clients arriving 100 at a time, then idle: memory per idle client.
func BenchmarkIdleMemory(b *testing.B) {
	chattest.IdleMemory(b, 5000, 100, idleArgs, tcpJoin)
}

// tcpJoin connects as client i, and returns once it is in the room.
var tcpJoin = chattest.TCPJoin(func(conn net.Conn, in *bufio.Reader, i int) error {
	return joinAs(conn, in, fmt.Sprint("u", i))
})

var serveForBench = serveDefault
