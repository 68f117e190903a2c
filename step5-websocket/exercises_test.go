//go:build exercises

// The checks of the exercises in docs/step5-websocket.md. They fail until
// you have done the exercise; run one with, for example,
//
//	go test -tags exercises -run '^TestExercise1' ./step5-websocket
package main

import (
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"testing"

	"gochat-steps/internal/chattest"

	"github.com/stretchr/testify/require"
)

// expectAfter reads c's next message and checks it is want; if it is not,
// the test fails saying what was sent, what was expected and why, and
// what arrived instead.
func expectAfter(t *testing.T, c *wsClient, sent string, want message, why string) {
	t.Helper()
	got, err := c.tryNext()
	if err != nil {
		t.Fatalf("after %q was sent, %s expected %+v (%s), got %v", sent, c.name, want, why, err)
	}
	if !got.is(want) {
		t.Fatalf("after %q was sent, %s expected %+v (%s), got %+v", sent, c.name, want, why, got)
	}
}

// Exercise 1: "/me waves" is an action, and comes to everyone, history
// included, as {"author": "ana", "body": "waves", "event": "action"}.
func TestExercise1MeSendsAnAction(t *testing.T) {
	chattest.Parallel(t)
	addr := start(t, defaults)
	ana, bob := chattest.Name("ana"), chattest.Name("bob")
	a := join(t, addr, ana)
	b := join(t, addr, bob)
	a.expect(message{Event: "arrived", Body: bob})
	action := message{Author: ana, Body: "waves", Event: "action"}
	a.send("/me waves")
	expectAfter(t, b, "/me waves", action, "an action, with the author, and the text after /me")
	expectAfter(t, a, "/me waves", action, "the sender hears its own action, as any message")
	a.send("/meh")
	expectAfter(t, b, "/meh", says(ana, "/meh"), `only "/me " starts an action`)
	c := join(t, addr, chattest.Name("cat"))
	expectAfter(t, c, "/me waves", action, "the history keeps actions too")
}

// Exercise 2: GET /history answers with the room's history, a JSON array
// of messages, oldest first, as a newcomer gets it.
func TestExercise2GetHistoryServesTheRecentMessages(t *testing.T) {
	chattest.Parallel(t)
	addr := start(t, defaults)
	ana := chattest.Name("ana")
	a := join(t, addr, ana)
	said := []message{says(ana, "hello"), says(ana, `<b>x</b> & "quotes"`)}
	for _, m := range said {
		a.send(m.Body)
		a.expect(m)
	}
	resp, err := http.Get("http://" + addr + "/history")
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /history: expected 200 OK, got %s: %q", resp.Status, body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("GET /history: expected Content-Type application/json, got %q", ct)
	}
	var history []message
	if err := json.Unmarshal(body, &history); err != nil {
		t.Fatalf("GET /history: expected a JSON array of messages, got %q (%v)", body, err)
	}
	// In classroom mode, the shared server's history also holds earlier
	// tests' messages: only its end is this test's.
	if len(history) < len(said) || !slices.EqualFunc(history[len(history)-len(said):], said, message.is) {
		t.Fatalf("%s said %+v; GET /history should end with them, oldest first, but gave %+v", ana, said, history)
	}
}

// Exercise 3: a frame {"event": "typing"} is not a message. The others
// get {"author": "ana", "body": "", "event": "typing"}; the typist gets
// nothing back, and the history never holds it.
func TestExercise3TypingIsToldToTheOthersOnly(t *testing.T) {
	chattest.Parallel(t)
	addr := start(t, defaults)
	ana, bob := chattest.Name("ana"), chattest.Name("bob")
	a := join(t, addr, ana)
	b := join(t, addr, bob)
	a.expect(message{Event: "arrived", Body: bob})
	const typing = `{"event": "typing"}`
	a.sendRaw(typing)
	expectAfter(t, b, typing, message{Author: ana, Event: "typing"}, "the others are told who is typing")
	a.send("hi")
	expectAfter(t, a, typing+` and then "hi"`, says(ana, "hi"), "the typist is not told of its own typing")
	expectAfter(t, b, "hi", says(ana, "hi"), "the message, after the typing")
	c := join(t, addr, chattest.Name("cat"))
	expectAfter(t, c, typing+` and then "hi"`, says(ana, "hi"), "the history holds the message, and not the typing")
}
