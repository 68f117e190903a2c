//go:build exercises

// The checks of the exercises in docs/step5-websocket.md. They fail until
// you have done the exercise; run one with, for example,
//
//	go test -tags exercises -run '^TestExercise1' ./step5-websocket
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
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

// Exercise 3: a newcomer's history ends with the newest message, however
// long the messages. 100 messages of 1,000 '<' are 600 KB of JSON ('<' is
// sent as \u003c), more than an outbox may hold (maxPending): the history
// must keep the newest messages that fit, not the oldest.
func TestExercise3TheHistoryEndsWithTheNewestMessage(t *testing.T) {
	chattest.Parallel(t)
	addr := start(t, defaults)
	ana := chattest.Name("ana")
	a := join(t, addr, ana)
	long := strings.Repeat("<", maxBody-4)
	for i := range defaults.history {
		a.send(fmt.Sprintf("%03d %s", i, long))
		a.expect(says(ana, fmt.Sprintf("%03d %s", i, long)))
	}
	b := join(t, addr, chattest.Name("bob"))
	a.expect(message{Event: "arrived", Body: b.name})
	a.send("live")
	var got []int // the numbers of the messages in b's history
	for {
		m, err := b.tryNext()
		if err != nil {
			t.Fatalf("%s joined after %d long messages; after %d of them in its history (%v), "+
				"expected more, or the live message, got %v", b.name, defaults.history, len(got), got, err)
		}
		if m.is(says(ana, "live")) {
			break
		}
		var n int
		if _, err := fmt.Sscanf(m.Body, "%d ", &n); err != nil || m.Author != ana {
			t.Fatalf("%s expected the history or the live message, got %+v", b.name, m)
		}
		got = append(got, n)
	}
	newest := defaults.history - 1
	if len(got) == 0 || got[len(got)-1] != newest {
		t.Fatalf("%s joined after %d long messages; its history should end with the newest, %d, but held %d: %v. "+
			"They are more than an outbox may hold (maxPending bytes), and what did not fit was lost",
			b.name, defaults.history, newest, len(got), got)
	}
	for i, n := range got {
		if n != got[0]+i {
			t.Fatalf("%s's history should be the newest messages, in order, oldest first, with no gap: got %v", b.name, got)
		}
	}
}
