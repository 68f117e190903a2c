package main

import (
	"bufio"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"gochat-steps/internal/chattest"
)

var protocol = chattest.Protocol{
	Serve: serve,
	Join: func(conn net.Conn, in *bufio.Reader, _ int) (string, error) {
		name := conn.LocalAddr().String()
		line, err := in.ReadString('\n')
		if err != nil || line != "You are "+name+"\n" {
			return "", fmt.Errorf("expected a greeting, got %q (%v)", line, err)
		}
		return name, nil
	},
	Says: func(name, text string) string { return name + ": " + text },
}

// Run with: go test -run '^$' -bench . ./step2-broadcast
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

// 5,000 clients joining at the same moment: the target is all of them in
// within 5 s. The memory it reports is inflated by the burst.
func BenchmarkJoin5000AtOnce(b *testing.B) {
	chattest.IdleMemory(b, 5000, 5000, []string{"-addr", "127.0.0.1:0"}, tcpJoin)
}

// 5,000 clients arriving 100 at a time, then idle: memory per idle client.
func BenchmarkIdleMemory(b *testing.B) {
	chattest.IdleMemory(b, 5000, 100, []string{"-addr", "127.0.0.1:0"}, tcpJoin)
}

// tcpJoin connects as client i, and returns once it is in the room.
var tcpJoin = chattest.TCPJoin(func(conn net.Conn, in *bufio.Reader, _ int) error {
	line, err := in.ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "You are ") {
		return fmt.Errorf("expected a greeting, got %q (%v)", line, err)
	}
	return nil
})
