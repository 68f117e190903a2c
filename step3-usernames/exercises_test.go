//go:build exercises

// The checks of the exercises in docs/step3-usernames.md. They fail until
// you have done the exercise; run one with, for example,
//
//	go test -tags exercises -run '^TestExercise1' ./step3-usernames
package main

import (
	"strings"
	"testing"

	"gochat-steps/internal/chattest"
)

// Exercise 1: a name keeps the case its owner typed, and is still taken
// whatever its case: "Ana" is shown as Ana, and "ana" or "ANA" is Ana.
func TestExercise1NamesKeepTheirCase(t *testing.T) {
	chattest.Parallel(t)
	addr := chattest.Start(t, serve)
	ana, bob := chattest.Name("Ana"), chattest.Name("bob")
	a := chattest.Dial(t, addr)
	a.ExpectText(prompt)
	a.Send(ana)
	a.ExpectAfter(ana, "welcome "+ana, "a name is shown as its owner typed it")
	b := join(t, addr, bob)
	a.Send("hi")
	b.ExpectAfter("hi", ana+" says: hi", "lines carry the name as typed")
	c := chattest.Dial(t, addr)
	c.ExpectText(prompt)
	for _, name := range []string{strings.ToLower(ana), strings.ToUpper(ana)} {
		c.Send(name)
		c.ExpectAfter(name, "name is taken", ana+" is in the room, and a name differing only in case is the same name")
		c.ExpectText(prompt)
	}
	a.Close()
	b.ExpectAfter("(nothing: "+ana+" hung up)", ana+" has left", "the room knows the name as typed")
	c.Send(strings.ToUpper(ana))
	c.ExpectAfter(strings.ToUpper(ana), "welcome "+strings.ToUpper(ana),
		ana+" has left, so the name is free again, in any case")
}

// Exercise 2: a taken name is refused with a free one to try instead.
func TestExercise2ATakenNameComesWithASuggestion(t *testing.T) {
	chattest.Parallel(t)
	addr := chattest.Start(t, serve)
	ana := chattest.Name("ana")
	join(t, addr, ana)
	join(t, addr, ana+"2")
	c := chattest.Dial(t, addr)
	c.ExpectText(prompt)
	c.Send(ana)
	c.ExpectAfter(ana, "name is taken, try "+ana+"3",
		ana+" and "+ana+"2 are in the room: "+ana+"3 is the first free name after them")
	c.ExpectText(prompt)
	c.Send(ana + "3")
	c.Expect("welcome " + ana + "3")

	// A name of 20 characters, the most there may be, has no room for a
	// number: no suggestion then.
	n := chattest.Name("")
	long := strings.Repeat("l", maxName-len(n)) + n
	join(t, addr, long)
	d := chattest.Dial(t, addr)
	d.ExpectText(prompt)
	d.Send(long)
	d.ExpectAfter(long, "name is taken", "a suggestion must be a valid name, and "+long+"2 is too long")
}

// Exercise 3: /nick changes a client's name, if the new one is valid and
// free; everyone in the room is told.
func TestExercise3NickChangesAName(t *testing.T) {
	chattest.Parallel(t)
	addr := chattest.Start(t, serve)
	ana, bob, anita := chattest.Name("ana"), chattest.Name("bob"), chattest.Name("anita")
	a := join(t, addr, ana)
	b := join(t, addr, bob)
	a.Expect(bob + " has arrived")

	a.Send("/nick " + anita)
	for _, c := range []*chattest.Client{a, b} {
		c.ExpectAfter("/nick "+anita, ana+" is now "+anita, "everyone in the room, the renamed included, is told")
	}
	a.Send("hi")
	for _, c := range []*chattest.Client{a, b} {
		c.ExpectAfter("hi", anita+" says: hi", "lines carry the new name")
	}

	// The old name is free again; the new one is taken.
	newAna := join(t, addr, ana)
	a.Expect(ana + " has arrived")
	b.Expect(ana + " has arrived")
	b.Send("/nick " + anita)
	b.ExpectAfter("/nick "+anita, "name is taken", anita+" is in the room: only its sender is told")
	b.Send("/nick no spaces")
	b.ExpectAfter("/nick no spaces", "name has a character that is not allowed: ' ' (use letters, digits, _ or -)",
		"a new name follows the same rules as the first")
	b.Send("still " + bob)
	for _, c := range []*chattest.Client{a, b, newAna} {
		c.ExpectAfter("still "+bob, bob+" says: still "+bob, "a refused /nick changes nothing, and nobody else hears of it")
	}

	// The room knows the client by its new name when it leaves.
	a.Close()
	b.ExpectAfter("(nothing: "+anita+" hung up)", anita+" has left", "the broadcaster's set of clients has the new name")
}
