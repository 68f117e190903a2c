//go:build exercises

// The checks of the exercises in docs/step6-cluster.md. They fail until
// you have done the exercise; run one with, for example,
//
//	go test -tags exercises -run '^TestExercise1' ./step6-cluster
package main

import (
	"slices"
	"strings"
	"testing"

	"gochat-steps/internal/chattest"
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

// Exercise 1: "/who" answers, to the asker alone, with the names in the
// room on every server, sorted: {"event": "who", "body": "ana, bob, cy"}.
func TestExercise1WhoListsTheNamesOnEveryServer(t *testing.T) {
	chattest.Parallel(t)
	s := clusterAddrs(t, 2)
	ana, bob, cy := chattest.Name("ana"), chattest.Name("bob"), chattest.Name("cy")
	a := join(t, s[0], ana)
	b := join(t, s[1], bob)
	c := join(t, s[0], cy)
	a.expect(message{Event: "arrived", Body: bob})
	a.expect(message{Event: "arrived", Body: cy})
	b.expect(message{Event: "arrived", Body: cy})
	names := []string{ana, bob, cy}
	slices.Sort(names)
	c.send("/who")
	expectAfter(t, c, "/who", message{Event: "who", Body: strings.Join(names, ", ")},
		"the names on both servers, sorted, to the asker")
	c.send("after")
	expectAfter(t, b, "/who then after", says(cy, "after"), "/who is not a message: the others do not hear it")
	expectAfter(t, c, "/who then after", says(cy, "after"), "/who is not a message")
	d := join(t, s[1], chattest.Name("dee"))
	expectAfter(t, d, "/who then after", says(cy, "after"), "/who is not in the history")
}

// Exercise 2: "/shout hello" reaches everyone, on every server, as
// {"author": "ana", "body": "HELLO", "event": "shout"}, through core NATS:
// it is not in the history.
func TestExercise2ShoutsReachEveryServerAndAreNotKept(t *testing.T) {
	chattest.Parallel(t)
	s := clusterAddrs(t, 2)
	ana, bob := chattest.Name("ana"), chattest.Name("bob")
	a := join(t, s[0], ana)
	b := join(t, s[1], bob)
	a.expect(message{Event: "arrived", Body: bob})
	a.send("said")
	a.expect(says(ana, "said"))
	b.expect(says(ana, "said"))
	shout := message{Author: ana, Body: "HELLO", Event: "shout"}
	a.send("/shout hello")
	expectAfter(t, b, "/shout hello", shout, "a shout, in upper case, on the other server")
	expectAfter(t, a, "/shout hello", shout, "the shouter hears its own shout")
	a.send("/shouted")
	expectAfter(t, b, "/shouted", says(ana, "/shouted"), `only "/shout " starts a shout`)
	c := join(t, s[1], chattest.Name("cy"))
	expectAfter(t, c, "/shout hello", says(ana, "said"), "the history keeps what was said, not the shout")
	expectAfter(t, c, "/shout hello", says(ana, "/shouted"), "the history keeps what was said, not the shout")
}
