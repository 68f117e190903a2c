package main

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"gochat-steps/internal/chattest"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestMain(m *testing.M) { chattest.Main(m, main) }

// server accepts one connection and runs handle on it in the background.
func server(t *testing.T, handle func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	wg.Go(func() {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		handle(conn)
	})
	return ln.Addr().String()
}

// runAsync runs netcat and returns what it printed and returned, once it has.
func runAsync(addr string, in io.Reader) <-chan result {
	done := make(chan result, 1)
	go func() {
		var out bytes.Buffer
		err := run(addr, in, &out)
		done <- result{out.String(), err}
	}()
	return done
}

type result struct {
	out string
	err error
}

func wait(t *testing.T, done <-chan result) result {
	t.Helper()
	select {
	case r := <-done:
		return r
	case <-time.After(chattest.Timeout):
		t.Fatalf("netcat did not return within %v of the server hanging up", chattest.Timeout)
		return result{}
	}
}

func TestCopiesInputToTheServerAndTheServerToOutput(t *testing.T) {
	addr := server(t, func(c net.Conn) {
		lines := bufio.NewScanner(c)
		for lines.Scan() {
			io.WriteString(c, strings.ToUpper(lines.Text())+"\n")
		}
	})
	r := wait(t, runAsync(addr, strings.NewReader("hello\nworld\n")))
	require.NoError(t, r.err)
	assert.Equal(t, "HELLO\nWORLD\n", r.out)
}

func TestKeepsPrintingAfterInputEndsUntilTheServerHangsUp(t *testing.T) {
	addr := server(t, func(c net.Conn) {
		got, _ := io.ReadAll(c) // until netcat half-closes
		io.WriteString(c, "you sent "+strings.TrimSpace(string(got))+"\n")
		io.WriteString(c, "bye\n")
	})
	r := wait(t, runAsync(addr, strings.NewReader("hi\n")))
	require.NoError(t, r.err)
	assert.Equal(t, "you sent hi\nbye\n", r.out)
}

func TestExitsAtOnceWhenTheServerHangsUp(t *testing.T) {
	addr := server(t, func(c net.Conn) { io.WriteString(c, "goodbye\n") })
	in, typing := io.Pipe() // a user who is not typing anything
	t.Cleanup(func() { typing.Close() })
	r := wait(t, runAsync(addr, in))
	require.NoError(t, r.err)
	assert.Equal(t, "goodbye\n", r.out)
}

func TestAConnectionErrorExitsNonZeroWithOneLine(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now

	cmd := chattest.MainCommand("-addr", addr)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err = cmd.Run()
	require.Error(t, err)
	assert.Equal(t, 1, cmd.ProcessState.ExitCode())
	assert.Regexp(t, `^netcat: dial tcp 127\.0\.0\.1:\d+: connect: connection refused\n$`, stderr.String())
}

func TestAResetConnectionIsReported(t *testing.T) {
	addr := server(t, func(c net.Conn) {
		io.ReadAll(io.LimitReader(c, 3))
		c.(*net.TCPConn).SetLinger(0) // close with a RST
	})
	in, typing := io.Pipe()
	t.Cleanup(func() { typing.Close() })
	done := runAsync(addr, in)
	io.WriteString(typing, "hi\n")
	r := wait(t, done)
	assert.ErrorContains(t, r.err, "connection reset by peer")
}
