//go:build exercises

// The checks for the exercises in docs/netcat.md. They fail on netcat as it
// is, and pass once you have done the exercise:
//
//	go test -tags exercises -run '^TestExercise1' ./netcat

package main

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"gochat-steps/internal/chattest"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Exercise 1: when the server hangs up, netcat says so, on standard error.
func TestExercise1SaysWhenTheServerHangsUp(t *testing.T) {
	addr := server(t, func(c net.Conn) { io.WriteString(c, "bye\n") })
	r := runProgram(t, "-addr", addr)
	require.Equal(t, "bye\n", r.stdout, "the server sent %q and hung up: netcat printed something else", "bye\n")
	assert.Equal(t, "netcat: the server closed the connection\n", r.stderr,
		"the server hung up: expected netcat to say so on standard error")
	assert.Equal(t, 0, r.code, "the server hung up: that is no failure, so the exit status should be 0")
}

// Exercise 2: with -idle, netcat gives up when the server has said nothing
// for that long.
func TestExercise2GivesUpWhenTheServerIsSilentTooLong(t *testing.T) {
	addr := server(t, func(c net.Conn) { io.Copy(io.Discard, c) }) // says nothing
	start := time.Now()
	r := runProgram(t, "-addr", addr, "-idle", "500ms")
	if r.code != 1 || !strings.Contains(r.stderr, "i/o timeout") {
		t.Fatalf("netcat -idle 500ms, with a server that says nothing: expected exit status 1 and an i/o timeout "+
			"on standard error, got status %d after %v, standard error %.120q", r.code, time.Since(start).Round(time.Millisecond), r.stderr)
	}
}

func TestExercise2KeepsGoingWhileTheServerTalks(t *testing.T) {
	addr := server(t, func(c net.Conn) {
		for range 5 { // 1.5 s in all, but never 1 s without a word
			io.WriteString(c, "still here\n")
			time.Sleep(300 * time.Millisecond) // pacing the server, not waiting for anything
		}
	})
	r := runProgram(t, "-addr", addr, "-idle", "1s")
	require.Equal(t, 0, r.code, "netcat -idle 1s, with a server that spoke every 300ms: it should not give up (standard error %.120q)", r.stderr)
	assert.Equal(t, strings.Repeat("still here\n", 5), r.stdout, "the server spoke every 300ms for 1.5s, then hung up")
}

// Exercise 3: when reading the input fails, netcat stops and reports it,
// instead of waiting for the server forever.
func TestExercise3ABrokenInputIsReported(t *testing.T) {
	received := make(chan string, 1)
	addr := server(t, func(c net.Conn) {
		// Wait for netcat to hang up, but not forever: netcat as it is waits
		// for us, and then we give up after Timeout.
		c.SetReadDeadline(time.Now().Add(chattest.Timeout))
		got, _ := io.ReadAll(c)
		received <- string(got)
	})
	in := io.MultiReader(strings.NewReader("hi\n"), iotest.ErrReader(errors.New("disk on fire")))
	start := time.Now()
	var r result
	select {
	case r = <-runAsync(addr, in):
	case <-time.After(2 * chattest.Timeout):
		t.Fatalf("netcat's input failed, but run had not returned after %v", 2*chattest.Timeout)
	}
	if r.err == nil || !strings.Contains(r.err.Error(), "disk on fire") {
		t.Fatalf("netcat's input failed with %q after %q: expected run to return that error, "+
			"got %v after %v (the server gave up waiting after %v)",
			"disk on fire", "hi\n", r.err, time.Since(start).Round(time.Millisecond), chattest.Timeout)
	}
	select {
	case got := <-received:
		assert.Equal(t, "hi\n", got, "what the server received before the input failed")
	case <-time.After(chattest.Timeout):
		t.Fatalf("run returned, but netcat's connection was still open after %v", chattest.Timeout)
	}
}

type programResult struct {
	stdout, stderr string
	code           int
}

// runProgram runs netcat's main with args, its standard input a pipe that
// stays open (a user who types nothing), and returns once it has exited.
func runProgram(t *testing.T, args ...string) programResult {
	t.Helper()
	stdin, typing, err := os.Pipe()
	require.NoError(t, err)
	defer stdin.Close()
	defer typing.Close()
	cmd := chattest.MainCommand(args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, &stdout, &stderr
	require.NoError(t, cmd.Start())
	exited := make(chan struct{})
	go func() {
		cmd.Wait() // the exit status is read below, from ProcessState
		close(exited)
	}()
	select {
	case <-exited:
	case <-time.After(chattest.Timeout):
		cmd.Process.Kill()
		<-exited
		t.Fatalf("netcat %s had not exited after %v (standard output %q, standard error %q)",
			strings.Join(args, " "), chattest.Timeout, stdout.String(), stderr.String())
	}
	return programResult{stdout.String(), stderr.String(), cmd.ProcessState.ExitCode()}
}
