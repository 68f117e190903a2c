//go:build exercises

// The checks of the exercises in docs/step4-exit-queue.md. They fail until
// you have done the exercise; run one with, for example,
//
//	go test -tags exercises -run '^TestExercise1' ./step4-exit-queue
package main

import (
	"context"
	"io"
	"net"
	"testing"
	"testing/synctest"
	"time"

	"gochat-steps/internal/chattest"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Exercise 1: "/quit some words" leaves, and the others see the words.
func TestExercise1QuitMayLeaveLastWords(t *testing.T) {
	chattest.Parallel(t)
	addr := chattest.Start(t, serveDefault)
	ana, bob := chattest.Name("ana"), chattest.Name("bob")
	a := join(t, addr, ana)
	for _, tc := range []struct{ sent, shown string }{
		{"/quit see you soon", ": see you soon"},
		{"  /quit   bye  ", ": bye"},
		{"/quit \x1b[31mred", ": \uFFFD[31mred"}, // sanitized, like every line
		{"/quit", ""},                            // no words: as before
	} {
		b := join(t, addr, bob)
		a.Expect(bob + " has arrived")
		b.Send(tc.sent)
		a.ExpectAfter(tc.sent, bob+" left the chat"+tc.shown, "the others see what came after /quit")
		b.ExpectClosed()
	}
	a.Send("/quitter is not /quit")
	a.Expect(ana + " says: /quitter is not /quit")
}

// Exercise 2: "/kick name" sends a client out of the room, through the
// usual way out: it is told, and the others see it leave, once.
func TestExercise2KickSendsAClientOut(t *testing.T) {
	chattest.Parallel(t)
	addr := chattest.Start(t, serveDefault)
	ana, bob, cleo := chattest.Name("ana"), chattest.Name("bob"), chattest.Name("cleo")
	a := join(t, addr, ana)
	b := join(t, addr, bob)
	c := join(t, addr, cleo)
	a.Expect(bob + " has arrived")
	a.Expect(cleo + " has arrived")
	b.Expect(cleo + " has arrived")

	a.Send("/kick " + bob)
	b.ExpectAfter("/kick "+bob, "kicked by "+ana, "the kicked client is told who kicked it")
	b.ExpectClosed()
	for _, cl := range []*chattest.Client{a, c} {
		cl.ExpectAfter("/kick "+bob, bob+" left the chat", "the others see it leave, as for any way out")
	}
	a.Send("/kick nobody")
	a.ExpectAfter("/kick nobody", "no one here is called nobody", "only the kicker is told")
	a.Send("and then?")
	for _, cl := range []*chattest.Client{a, c} {
		cl.ExpectAfter("and then?", ana+" says: and then?", "each way out is announced once, and /kick is not chat")
	}
}

// Exercise 3: a silent client is asked "are you still there?" halfway to
// the idle timeout. On synctest's fake clock, with the default -idle of
// five minutes, as in TestSilentForFiveMinutesMeansIdle.
func TestExercise3SilentClientsAreWarnedHalfwayToIdle(t *testing.T) {
	chattest.InProcess(t) // a fake clock
	synctest.Test(t, func(t *testing.T) {
		ln := chattest.NewPipeListener()
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		served := make(chan error, 1)
		go func() { served <- serveDefault(ctx, ln) }()
		start := time.Now()
		type transcript struct {
			text   string
			closed time.Duration // when the server closed the connection
		}
		c := ln.Dial()
		heard := make(chan transcript, 1)
		go func() { // net.Pipe has no buffer: read all the time
			text, _ := io.ReadAll(c)
			heard <- transcript{string(text), time.Since(start)}
		}()
		say := func(c net.Conn, line string) {
			_, err := c.Write([]byte(line + "\n"))
			require.NoError(t, err)
		}
		say(c, "ana")
		time.Sleep(4 * time.Minute) // warned at 2:30
		say(c, "yes")               // so the five minutes start again
		got := <-heard              // warned at 6:30, cut off at 9:00
		assert.Equal(t, prompt+"welcome ana\nare you still there?\nana says: yes\n"+
			"are you still there?\nidle timeout\n", got.text,
			"ana said its name at 0:00 and yes at 4:00, then nothing: it should be asked at 2:30 and 6:30, and cut off at 9:00")
		assert.Equal(t, 9*time.Minute, got.closed, "ana was not cut off after five minutes of silence")
		cancel()
		require.NoError(t, <-served)
	})
}
