//go:build exercises

// The checks of the exercises in docs/step2-broadcast.md. They fail until
// you have done the exercise; run one with, for example,
//
//	go test -tags exercises -run '^TestExercise1' ./step2-broadcast
package main

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"gochat-steps/internal/chattest"
)

// Exercise 1: /who tells the client who asked, and only it, who is in the
// room: "in the room: " and the addresses, sorted, between ", ".
func TestExercise1WhoTellsTheAskerWhoIsInTheRoom(t *testing.T) {
	chattest.Parallel(t)
	addr := chattest.Start(t, serve)
	ana := enter(t, addr)
	bob := enter(t, addr)
	ana.Expect(bob.Addr() + " has arrived")

	bob.Send("/who")
	names := []string{ana.Addr(), bob.Addr()}
	slices.Sort(names)
	bob.ExpectAfter("/who", "in the room: "+strings.Join(names, ", "),
		"the asker is told who is in the room, itself included")
	bob.Send("hi")
	ana.ExpectAfter("/who then hi", bob.Addr()+": hi",
		"the question and its answer are for the asker alone: ana hears only bob's hi")
	bob.Expect(bob.Addr() + ": hi")

	ana.Close()
	bob.Expect(ana.Addr() + " has left")
	bob.Send("/who")
	bob.ExpectAfter("/who", "in the room: "+bob.Addr(), "ana has left: bob is alone")
}

// Exercise 2: "/msg <address> <text>" reaches that client alone, as
// "<sender> (private): <text>"; the sender sees it too. A private message
// to someone who is not there gets "no one here is called <address>".
func TestExercise2MsgReachesOneClientAlone(t *testing.T) {
	chattest.Parallel(t)
	addr := chattest.Start(t, serve)
	ana := enter(t, addr)
	bob := enter(t, addr)
	cat := enter(t, addr)
	ana.Expect(bob.Addr() + " has arrived")
	ana.Expect(cat.Addr() + " has arrived")
	bob.Expect(cat.Addr() + " has arrived")

	sent := "/msg " + bob.Addr() + " psst, bob"
	ana.Send(sent)
	private := ana.Addr() + " (private): psst, bob"
	bob.ExpectAfter(sent, private, "bob is the one it is for")
	ana.ExpectAfter(sent, private, "the sender sees what it sent, as it does in public")
	ana.Send("hello all")
	cat.ExpectAfter(sent+" then hello all", ana.Addr()+": hello all",
		"the private message was not for cat: cat hears only what ana said in public")

	nobody := "192.0.2.1:9" // an address no client here can have
	sent = "/msg " + nobody + " anyone?"
	cat.Send(sent)
	cat.ExpectAfter(sent, "no one here is called "+nobody, "nobody has that address")
	cat.Send("ok")
	bob.ExpectAfter(sent+" then ok", ana.Addr()+": hello all", "bob's lines so far")
	bob.ExpectAfter(sent+" then ok", cat.Addr()+": ok", "a private message to nobody reaches nobody")
}

// Exercise 3: when the server drops a client that does not read, the
// room hears why: "<address> has left (not reading)". A client that hangs
// up itself still just "has left".
func TestExercise3TheRoomHearsWhyAClientWasDropped(t *testing.T) {
	chattest.Parallel(t)
	addr := chattest.Start(t, serve)
	stuck := enter(t, addr)
	if err := stuck.Conn().SetReadBuffer(4096); err != nil {
		t.Fatal(err)
	}
	talker := enter(t, addr)
	listener := enter(t, addr)
	talker.Expect(listener.Addr() + " has arrived")

	// The talker sends long lines until the stuck client, which reads
	// nothing, is dropped; the listener reads everything.
	text := strings.Repeat("z", 1000)
	const most = 20000 // 20 MB: far more than the kernel's buffers and maxPending
	for i := 0; i < most; i += 100 {
		batch := make([]string, 100)
		for j := range batch {
			batch[j] = fmt.Sprintf("%d %s", i+j, text)
		}
		talker.Send(batch...)
		last := talker.Addr() + ": " + batch[len(batch)-1]
		talker.Until(last)
		for _, line := range listener.Until(last) {
			if strings.HasPrefix(line, stuck.Addr()+" has left") {
				want := stuck.Addr() + " has left (not reading)"
				if line != want {
					t.Fatalf("%s read nothing and was dropped after %d lines of 1,000 bytes; the listener expected %q, got %q",
						stuck.Addr(), i+100, want, line)
				}
				talker.Close()
				listener.ExpectAfter("(nothing: the talker hung up)", talker.Addr()+" has left",
					"a client that hangs up itself just has left")
				return
			}
		}
	}
	t.Fatalf("the stuck client was never dropped after %d lines", most)
}
