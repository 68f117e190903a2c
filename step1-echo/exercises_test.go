//go:build exercises

// The checks for the exercises in docs/step1-echo.md. They fail on step 1
// as it is, and pass once you have done the exercise:
//
//	go test -tags exercises -run '^TestExercise1' ./step1-echo

package main

import (
	"errors"
	"io"
	"log"
	"strings"
	"testing"
	"time"

	"gochat-steps/internal/chattest"

	"github.com/stretchr/testify/require"
)

// Exercise 1: every line goes back to its sender, and is still printed.
func TestExercise1EveryLineIsSentBackToItsSender(t *testing.T) {
	addr, out := start(t)
	c := chattest.Dial(t, addr)
	c.Send("hello", "world")
	out.expect(c.Addr() + ": hello")
	out.expect(c.Addr() + ": world")
	// End our input: the server reads end-of-file and hangs up, so a server
	// that sends nothing back is caught at once, not after a timeout.
	require.NoError(t, c.Conn().CloseWrite())
	for _, want := range []string{"hello", "world"} {
		got, err := c.ReadLine()
		if err != nil {
			t.Fatalf("sent %q and %q: expected the server to send back %q, but reading got %v. "+
				"Does handleConn write each line back to its connection?", "hello", "world", want, err)
		}
		require.Equal(t, want, got, "sent %q and %q: the server sent back something else", "hello", "world")
	}
	c.ExpectClosed()
}

// Exercise 2: when a client leaves, the server logs how many lines it sent.
func TestExercise2EachDepartureIsLoggedWithItsLineCount(t *testing.T) {
	logged := captureLog(t) // before start: it must outlive the server
	addr, out := start(t)
	ana := chattest.Dial(t, addr)
	bob := chattest.Dial(t, addr)
	for _, c := range []*chattest.Client{ana, bob, ana, bob, ana} {
		c.Send("a line")
		out.expect(c.Addr() + ": a line")
	}
	for _, leaving := range []struct {
		c     *chattest.Client
		lines string
	}{{ana, "3 lines"}, {bob, "2 lines"}} {
		leaving.c.Close()
		want := leaving.c.Addr() + " disconnected after " + leaving.lines
		line := logged.next(leaving.c.Addr() + " disconnected")
		if !strings.Contains(line, want) {
			t.Fatalf("%s sent %s and hung up: expected the server to log %q, it logged %q. "+
				"Each client needs its own count.", leaving.c.Addr(), leaving.lines, want, line)
		}
	}
}

// Exercise 3: a 101st client is told the server is full, and a client can
// come in again once someone has left.
func TestExercise3TheHundredAndFirstClientIsTurnedAway(t *testing.T) {
	const full = "server full (100 clients), try again later"
	addr, out := start(t)
	var in []*chattest.Client
	for range 100 {
		c := chattest.Dial(t, addr)
		c.Send("I am in")
		out.expect(c.Addr() + ": I am in")
		in = append(in, c)
	}

	extra := chattest.Dial(t, addr)
	require.NoError(t, extra.Conn().CloseWrite()) // so a server that lets it in hangs up at once
	got, err := extra.ReadLine()
	if err != nil || got != full {
		t.Fatalf("with 100 clients in, a 101st connected: expected the server to send it %q and hang up, got %q (%v)",
			full, got, err)
	}
	extra.ExpectClosed()

	// One leaves: its place is free again once the server has seen it go.
	// A client turned away gets the message (or a reset, as the server did
	// not read what it sent); one let in gets nothing, and is printed.
	in[0].Close()
	deadline := time.Now().Add(chattest.Timeout)
	for {
		c := chattest.Dial(t, addr)
		c.Send("back in")
		require.NoError(t, c.Conn().CloseWrite())
		got, err := c.ReadLine()
		if errors.Is(err, io.EOF) {
			out.expect(c.Addr() + ": back in")
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("a client left the full server, but for %v after, newcomers were still turned away (last got %q, %v): "+
				"is its place given back when it leaves?", chattest.Timeout, got, err)
		}
		c.Close()
		time.Sleep(10 * time.Millisecond) // polling, bounded by deadline
	}
}

// captureLog copies the standard logger's lines to the test until it ends.
func captureLog(t *testing.T) *logLines {
	l := &logLines{t: t, lines: make(chan string, 1024)}
	prev := log.Writer()
	log.SetOutput(io.MultiWriter(prev, l))
	t.Cleanup(func() { log.SetOutput(prev) })
	return l
}

type logLines struct {
	t     *testing.T
	lines chan string
}

// Write takes one log line: the log package writes each with one call.
func (l *logLines) Write(p []byte) (int, error) {
	select {
	case l.lines <- strings.TrimSuffix(string(p), "\n"):
	default: // never hold up the server; 1024 lines are plenty for a test
	}
	return len(p), nil
}

// next returns the next line logged that contains s, waiting at most Timeout.
func (l *logLines) next(s string) string {
	l.t.Helper()
	deadline := time.After(chattest.Timeout)
	for {
		select {
		case line := <-l.lines:
			if strings.Contains(line, s) {
				return line
			}
		case <-deadline:
			l.t.Fatalf("expected the server to log a line with %q, nothing after %v", s, chattest.Timeout)
		}
	}
}
