package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"gochat-steps/internal/chattest"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestMain(m *testing.M) { chattest.Main(m, main) }

// serveDefault serves with the default idle timeout.
func serveDefault(ctx context.Context, ln net.Listener) error {
	return serve(ctx, ln, 5*time.Minute, 2000)
}

const prompt = "Enter your username: "

// join connects a client called name and reads its welcome: from then on
// it is in the room.
func join(t *testing.T, addr, name string) *chattest.Client {
	t.Helper()
	c := chattest.Dial(t, addr)
	c.ExpectText(prompt)
	c.Send(name)
	c.Expect("welcome " + name)
	return c.Named(name)
}

// tryJoin is join for goroutines other than the test's.
func tryJoin(t *testing.T, addr, name string) (*chattest.Client, error) {
	c, err := chattest.TryDial(t, addr)
	if err != nil {
		return nil, err
	}
	if err := c.TrySend(name); err != nil {
		return nil, err
	}
	if _, err := c.TryUntil(prompt + "welcome " + name); err != nil {
		return nil, err
	}
	return c.Named(name), nil
}

func says(name string) func(string) string {
	return func(text string) string { return name + " says: " + text }
}

func TestNewcomerIsAskedForAName(t *testing.T) {
	chattest.Parallel(t)
	addr := chattest.Start(t, serveDefault)
	c := chattest.Dial(t, addr)
	c.ExpectText(prompt)
	name := chattest.Name("ana")
	c.Send("  " + name + "  ") // surrounding spaces are trimmed
	c.Expect("welcome " + name)
}

func TestInvalidNamesAreRefusedWithAReason(t *testing.T) {
	chattest.Parallel(t)
	addr := chattest.Start(t, serveDefault)
	c := chattest.Dial(t, addr)
	c.ExpectText(prompt)
	for _, tc := range []struct{ name, sent, reason string }{
		{"empty", "", "name is empty"},
		{"only spaces", "   ", "name is empty"},
		{"21 characters", strings.Repeat("é", 21), "name is too long (max 20 characters)"},
		{"a space inside", "ana maria", `name has a character that is not allowed: ' ' (use letters, digits, _ or -)`},
		{"punctuation", "ana!", `name has a character that is not allowed: '!' (use letters, digits, _ or -)`},
		{"an escape", "\x1b[31mana", `name has a character that is not allowed: '\x1b' (use letters, digits, _ or -)`},
		{"invalid UTF-8", "an\xffa", `name has a character that is not allowed: '\ufffd' (use letters, digits, _ or -)`},
		{"Latin in a right-to-left name", "محمدana", "name breaks the Bidi Rule for right-to-left text (RFC 5893)"},
	} {
		c.Send(tc.sent)
		c.Expect(tc.reason)
		c.ExpectText(prompt)
	}
	name := chattest.Name("ana")
	c.Send(name)
	c.Expect("welcome " + name)
}

func TestNamesMayBeWrittenInAnyScript(t *testing.T) {
	chattest.Parallel(t)
	addr := chattest.Start(t, serveDefault)
	for _, name := range []string{
		chattest.Name("josé"), chattest.Name("zoë_m-"), chattest.Name("x"), chattest.Name("_élan"),
		chattest.NameInScript("नमस्ते"), chattest.NameInScript("дмитрий"), chattest.NameInScript("李雷"),
		chattest.NameInScript("محمد"), chattest.NameInScript("さくら東京"), chattest.NameInScript("ελένη"),
	} {
		join(t, addr, name)
	}
	join(t, addr, strings.Repeat("ü", 18)+"42") // exactly 20 characters
}

// Names are compared, and shown, in lower case: ANA is ana, so it is taken
// while ana is in the room.
func TestANameIsTakenWhateverItsCase(t *testing.T) {
	chattest.Parallel(t)
	addr := chattest.Start(t, serveDefault)
	name := chattest.Name("ana")
	join(t, addr, name)
	c := chattest.Dial(t, addr)
	c.ExpectText(prompt)
	for _, sent := range []string{name, strings.ToUpper(name), "A" + name[1:]} {
		c.Send(sent)
		c.ExpectAfter(sent, "name is taken", name+" is in the room, and case makes no other name")
		c.ExpectText(prompt)
	}
	other := chattest.Name("bob")
	c.Send(strings.ToUpper(other))
	c.ExpectAfter(strings.ToUpper(other), "welcome "+other, "a name is shown in lower case")
}

// A name that looks like one in the room must be refused, or become that
// name and be found taken: invisible characters, other widths, accents
// written apart, stacked marks, letters of another script.
func TestLookAlikeNamesAreRefusedOrFoundTaken(t *testing.T) {
	chattest.Parallel(t)
	addr := chattest.Start(t, serveDefault)
	alice, jose := chattest.Name("alice"), chattest.Name("jos\u00e9") // é as one character
	join(t, addr, alice)
	join(t, addr, jose)
	notAllowed := func(c string) string {
		return "name has a character that is not allowed: " + c + " (use letters, digits, _ or -)"
	}
	for _, tc := range []struct{ what, sent, imitates, reason string }{
		{"a variation selector after it", alice + "\uFE0F", alice, notAllowed(`'\ufe0f'`)},
		{"a combining grapheme joiner inside", alice[:3] + "\u034F" + alice[3:], alice, notAllowed(`'\u034f'`)},
		{"a Mongolian variation selector", alice + "\u180B", alice, notAllowed(`'\u180b'`)},
		{"a zero width space", alice + "\u200B", alice, notAllowed(`'\u200b'`)},
		{"é written apart (NFD)", "jose\u0301" + jose[len("jos\u00e9"):], jose, "name is taken"},
		{"fullwidth letters", fullwidth(alice), alice, "name is taken"},
		{"capitals", strings.ToUpper(alice), alice, "name is taken"},
		{"a Cyrillic а", "\u0430" + alice[1:], alice, "name mixes scripts: Cyrillic, Latin"},
		{"the Hangul filler, invisible", "\u3164", "an empty name", notAllowed(`'\u3164'`)},
		{"the halfwidth Hangul filler", "\uFFA0", "an empty name", notAllowed(`'\uffa0'`)},
		{"the Hangul choseong filler", "\u115F", "an empty name", notAllowed(`'\u115f'`)},
		{"an accent twice", "jos\u00e9\u0301" + jose[len("jos\u00e9"):], jose, `name has the same mark twice on one character: '\u0301'`},
		{"Z with 19 stacked marks", "Z" + stacked(19), "an unreadable smudge", "name has more than 4 marks on one character"},
	} {
		t.Run(tc.what, func(t *testing.T) {
			c := chattest.Dial(t, addr)
			c.ExpectText(prompt)
			c.Send(tc.sent)
			c.ExpectAfter(tc.sent, tc.reason, "it looks like "+tc.imitates)
		})
	}
}

// stacked returns n different combining marks, U+0300 and on: on a letter,
// they pile up on top of it.
func stacked(n int) string {
	marks := make([]rune, n)
	for i := range marks {
		marks[i] = '\u0300' + rune(i)
	}
	return string(marks)
}

// fullwidth writes name's ASCII letters and digits in their fullwidth forms.
func fullwidth(name string) string {
	return strings.Map(func(r rune) rune {
		if r >= '0' && r <= '9' || r >= 'a' && r <= 'z' {
			return r + '\uFF10' - '0'
		}
		return r
	}, name)
}

func TestANameIsFreeAgainOnceItsOwnerHasLeft(t *testing.T) {
	chattest.Parallel(t)
	addr := chattest.Start(t, serveDefault)
	name, bob := chattest.Name("ana"), chattest.Name("bob")
	ana := join(t, addr, name)
	b := join(t, addr, bob)
	ana.Close()
	b.Expect(name + " left the chat")
	join(t, addr, name)
}

// A client refused a taken name that then leaves from the prompt must not
// take the name's owner out of the room with it: the exit guide removes a
// client only if it is the one in the room under that name.
func TestLeavingAfterATakenNameRemovesNobody(t *testing.T) {
	chattest.Parallel(t)
	addr := chattest.Start(t, serveDefault)
	name, bob := chattest.Name("ana"), chattest.Name("bob")
	ana := join(t, addr, name)
	b := join(t, addr, bob)
	ana.Expect(bob + " has arrived")
	impostor := chattest.Dial(t, addr)
	impostor.ExpectText(prompt)
	impostor.Send(name)
	impostor.Expect("name is taken")
	impostor.ExpectText(prompt)
	require.NoError(t, impostor.Conn().CloseWrite())
	impostor.ExpectClosed() // the exit guide has seen it out
	ana.Send("still here")
	b.Expect(name + " says: still here")
}

func TestOthersHearArrivalButNewcomerDoesNot(t *testing.T) {
	chattest.Parallel(t)
	addr := chattest.Start(t, serveDefault)
	ana, bob := chattest.Name("ana"), chattest.Name("bob")
	a := join(t, addr, ana)
	b := join(t, addr, bob)
	a.Expect(bob + " has arrived")
	b.Send("hi")
	b.Expect(bob + " says: hi")
}

func TestEveryLineReachesEveryoneSenderIncluded(t *testing.T) {
	chattest.Parallel(t)
	addr := chattest.Start(t, serveDefault)
	ana, bob := chattest.Name("ana"), chattest.Name("bob")
	a := join(t, addr, ana)
	b := join(t, addr, bob)
	a.Expect(bob + " has arrived")
	a.Send("hello", "from ana")
	for _, c := range []*chattest.Client{a, b} {
		c.Expect(ana + " says: hello")
		c.Expect(ana + " says: from ana")
	}
}

func TestLinesEndingInCRLFAreAccepted(t *testing.T) {
	chattest.Parallel(t)
	addr := chattest.Start(t, serveDefault)
	c := chattest.Dial(t, addr)
	c.ExpectText(prompt)
	name := chattest.Name("ana")
	c.Send(name+"\r", "telnet says hi\r")
	c.Expect("welcome " + name)
	c.Expect(name + " says: telnet says hi")
}

func TestEveryoneSeesTheSameOrder(t *testing.T) {
	chattest.Parallel(t)
	addr := chattest.Start(t, serveDefault)
	var clients []*chattest.Client
	for range 3 {
		name := chattest.Name("c")
		c := join(t, addr, name)
		for _, old := range clients {
			old.Expect(name + " has arrived")
		}
		clients = append(clients, c)
	}
	const perSender = 100
	var wg sync.WaitGroup
	for _, c := range clients {
		var lines []string
		for i := range perSender {
			lines = append(lines, fmt.Sprint(i))
		}
		wg.Go(func() { assert.NoError(t, c.TrySend(lines...)) })
	}
	wg.Wait()
	var seen [][]string
	for _, c := range clients {
		var got []string
		next := map[string]int{} // sender -> next number expected from it
		for range perSender * len(clients) {
			line := c.Line("a chat line")
			got = append(got, line)
			sender, n, _ := strings.Cut(line, " says: ")
			require.Equal(t, fmt.Sprint(next[sender]), n, "%s got %s's lines out of order", c.Addr(), sender)
			next[sender]++
		}
		seen = append(seen, got)
	}
	for i := 1; i < len(seen); i++ {
		assert.Equal(t, seen[0], seen[i], "clients saw different orders")
	}
}

// The newcomer must receive everything the room says after its arrival,
// even while another client is talking fast: the arrival's place in the
// talker's stream says where the newcomer's stream must start.
func TestNewcomerMissesNothingAfterItsArrival(t *testing.T) {
	chattest.Parallel(t)
	addr := chattest.Start(t, serveDefault)
	talkerName := chattest.Name("talker")
	talker := join(t, addr, talkerName)
	stop := make(chan struct{})
	type talk struct {
		lines []string
		err   error
	}
	talked := make(chan talk, 1)
	go func() {
		lines, err := talker.TalkUntil(stop, 100000, says(talkerName))
		talked <- talk{lines, err}
	}()
	name := chattest.Name("newcomer")
	newcomer := join(t, addr, name)
	first := newcomer.Line("the first line after the welcome")
	close(stop)
	heard := <-talked
	require.NoError(t, heard.err)
	arrival := slices.Index(heard.lines, name+" has arrived")
	require.True(t, arrival >= 0 && arrival+1 < len(heard.lines),
		"the talker heard no arrival, or nothing after it; the newcomer heard %q first, the talker ended with %q",
		first, heard.lines[max(0, len(heard.lines)-3):])
	assert.Equal(t, heard.lines[arrival+1], first, "the newcomer missed lines said after its arrival")
}

func TestAClientAtThePromptGetsNoChatAndHoldsUpNobody(t *testing.T) {
	chattest.Parallel(t)
	addr := chattest.Start(t, serveDefault)
	waiting := chattest.Dial(t, addr)
	waiting.ExpectText(prompt)
	ana := chattest.Name("ana")
	a := join(t, addr, ana)
	a.Send("while you think")
	a.Expect(ana + " says: while you think")
	name := chattest.Name("late")
	waiting.Send(name, "hello")
	waiting.Expect("welcome " + name) // nothing said before it
	waiting.Expect(name + " says: hello")
}

func TestLeavingBeforeNamingLeavesNoTrace(t *testing.T) {
	for _, tc := range []struct {
		name  string
		leave func(*chattest.Client)
	}{
		{"close", (*chattest.Client).Close},
		{"reset", (*chattest.Client).Reset},
	} {
		t.Run(tc.name, func(t *testing.T) {
			chattest.Parallel(t)
			addr := chattest.Start(t, serveDefault)
			ana := chattest.Name("ana")
			a := join(t, addr, ana)
			c := chattest.Dial(t, addr)
			c.ExpectText(prompt)
			tc.leave(c)
			a.Send("anyone?")
			a.Expect(ana + " says: anyone?") // and no "has left" before it
		})
	}
}

// Every way out, whatever the reason, shows the others "<name> left the
// chat" exactly once, and tells the leaver why when there is something to say.
func TestEveryWayOutIsAnnouncedOnce(t *testing.T) {
	for _, tc := range []struct {
		name  string
		leave func(*chattest.Client)
		told  []string // what the leaver reads before the connection closes
	}{
		{"close", (*chattest.Client).Close, nil},
		{"reset", (*chattest.Client).Reset, nil},
		{"half-close", func(c *chattest.Client) { require.NoError(t, c.Conn().CloseWrite()) }, []string{}},
		{"/quit", func(c *chattest.Client) { c.Send("/quit") }, []string{}},
		{"/quit with spaces", func(c *chattest.Client) { c.Send("  /quit ") }, []string{}},
		{"a line too long", func(c *chattest.Client) { c.Send(strings.Repeat("x", maxLine+1)) },
			[]string{fmt.Sprintf("line too long (max %d bytes)", maxLine)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			chattest.Parallel(t)
			addr := chattest.Start(t, serveDefault)
			ana, bob := chattest.Name("ana"), chattest.Name("bob")
			a := join(t, addr, ana)
			b := join(t, addr, bob)
			a.Expect(bob + " has arrived")
			tc.leave(b)
			if tc.told != nil {
				for _, line := range tc.told {
					b.Expect(line)
				}
				b.ExpectClosed()
			}
			a.Expect(bob + " left the chat")
			a.Send("and then?")
			a.Expect(ana + " says: and then?") // no second announcement
		})
	}
}

func TestIdleClientIsToldAndDisconnected(t *testing.T) {
	chattest.Parallel(t)
	const idle = 300 * time.Millisecond
	addr := chattest.StartWith(t, func(ctx context.Context, ln net.Listener) error {
		return serve(ctx, ln, idle, 2000)
	}, "-idle", idle.String())
	atPrompt := chattest.Dial(t, addr)
	atPrompt.ExpectText(prompt)
	ana := chattest.Name("ana")
	a := join(t, addr, ana)
	started := time.Now()
	a.Expect("idle timeout")
	a.ExpectClosed()
	assert.GreaterOrEqual(t, time.Since(started), idle-50*time.Millisecond, "disconnected before -idle")
	atPrompt.Expect("idle timeout")
	atPrompt.ExpectClosed()
}

// A client's own lines keep it in the room; what the others say does not.
// The rule of the next test, on the real clock with -idle 1s, so that it
// is graded for a student's server too.
func TestIdleCountsOnlyTheClientsOwnLines(t *testing.T) {
	chattest.Parallel(t)
	const idle = time.Second
	addr := chattest.StartWith(t, func(ctx context.Context, ln net.Listener) error {
		return serve(ctx, ln, idle, 2000)
	}, "-idle", idle.String())
	silentName, talkerName := chattest.Name("silent"), chattest.Name("talker")
	silent := join(t, addr, silentName)
	started := time.Now()
	talker := join(t, addr, talkerName)
	heard := make(chan time.Duration, 1)
	go func() {
		if _, err := silent.TryUntil("idle timeout"); err != nil {
			heard <- -1
			return
		}
		heard <- time.Since(started)
	}()
	// The passage of time is what this test is about: the talker sends a
	// line every idle/4, for twice -idle; the silent client hears them all.
	for i := range 8 {
		talker.Send(fmt.Sprint(i))
		talker.UntilDespite(silent, talkerName+" says: "+fmt.Sprint(i))
		time.Sleep(idle / 4)
	}
	talker.Send("still here")
	talker.Until(talkerName + " says: still here")
	elapsed := <-heard
	require.GreaterOrEqual(t, elapsed, time.Duration(0), "%s, silent since it joined, never got \"idle timeout\"", silentName)
	assert.GreaterOrEqual(t, elapsed, idle-50*time.Millisecond, "%s was cut off before -idle %v", silentName, idle)
	assert.Less(t, elapsed, 2*idle, "%s, silent, was cut off only after %v with -idle %v (do the others' lines restart its clock?)", silentName, elapsed, idle)
}

// The idle clock counts lines, not bytes: a client that sends a byte every
// third of -idle, and never ends a line, is cut off all the same, at the
// prompt and in the room.
func TestDribblingAByteAtATimeIsStillIdle(t *testing.T) {
	for _, atPrompt := range []bool{true, false} {
		t.Run(fmt.Sprint("at the prompt: ", atPrompt), func(t *testing.T) {
			chattest.Parallel(t)
			const idle = 300 * time.Millisecond
			addr := chattest.StartWith(t, func(ctx context.Context, ln net.Listener) error {
				return serve(ctx, ln, idle, 2000)
			}, "-idle", idle.String())
			var c *chattest.Client
			if atPrompt {
				c = chattest.Dial(t, addr)
				c.ExpectText(prompt)
			} else {
				c = join(t, addr, chattest.Name("ana"))
			}
			stop, dribbled := make(chan struct{}), make(chan struct{})
			go func() {
				defer close(dribbled)
				tick := time.NewTicker(idle / 3)
				defer tick.Stop()
				for {
					select {
					case <-stop:
						return
					case <-tick.C:
						if _, err := c.Conn().Write([]byte("x")); err != nil {
							return // the server has hung up
						}
					}
				}
			}()
			c.Until("idle timeout") // the bytes so far may come first, as a last line
			c.ExpectClosed()
			close(stop)
			<-dribbled
		})
	}
}

// The same with the default -idle of five minutes, on synctest's fake clock.
func TestSilentForFiveMinutesMeansIdle(t *testing.T) {
	chattest.InProcess(t)
	synctest.Test(t, func(t *testing.T) {
		ln := chattest.NewPipeListener()
		ctx, cancel := context.WithCancel(t.Context())
		served := make(chan error, 1)
		go func() { served <- serveDefault(ctx, ln) }()
		start := time.Now()
		type transcript struct {
			text   string
			closed time.Duration // when the server closed the connection
		}
		// net.Pipe has no buffer: every client must read all the time.
		readAll := func(c net.Conn) <-chan transcript {
			done := make(chan transcript, 1)
			go func() {
				text, _ := io.ReadAll(c)
				done <- transcript{string(text), time.Since(start)}
			}()
			return done
		}
		silent, talker := ln.Dial(), ln.Dial()
		silentHeard, talkerHeard := readAll(silent), readAll(talker)
		say := func(c net.Conn, line string) {
			_, err := c.Write([]byte(line + "\n"))
			require.NoError(t, err)
		}
		say(silent, "quiet")
		synctest.Wait()
		say(talker, "talker")
		for range 6 { // the talker speaks every minute, at 0:30, 1:30...
			time.Sleep(30 * time.Second)
			say(talker, "x")
			time.Sleep(30 * time.Second)
		}
		heard := <-silentHeard
		assert.Equal(t, 5*time.Minute, heard.closed, "the silent client was not cut off after exactly -idle")
		assert.Equal(t, prompt+"welcome quiet\ntalker has arrived\n"+
			strings.Repeat("talker says: x\n", 5)+"idle timeout\n", heard.text)
		cancel()
		require.NoError(t, <-served)
		assert.Equal(t, prompt+"welcome talker\n"+strings.Repeat("talker says: x\n", 5)+
			"quiet left the chat\ntalker says: x\nserver is shutting down\n", (<-talkerHeard).text)
	})
}

func TestHalfClosedClientStillGetsItsLastLines(t *testing.T) {
	chattest.Parallel(t)
	addr := chattest.Start(t, serveDefault)
	name := chattest.Name("ana")
	a := join(t, addr, name)
	a.Send("bye")
	require.NoError(t, a.Conn().CloseWrite())
	a.Expect(name + " says: bye")
	a.ExpectClosed()
}

func TestNameAndFirstLinesInOneWriteAreAllDelivered(t *testing.T) {
	chattest.Parallel(t)
	addr := chattest.Start(t, serveDefault)
	c := chattest.Dial(t, addr)
	name := chattest.Name("ana")
	c.Send(name, "one", "two") // before reading the prompt, in one write
	c.ExpectText(prompt)
	c.Expect("welcome " + name)
	c.Expect(name + " says: one")
	c.Expect(name + " says: two")
}

func TestHostileTextIsNeutralised(t *testing.T) {
	chattest.Parallel(t)
	addr := chattest.Start(t, serveDefault)
	ana, bob := chattest.Name("ana"), chattest.Name("bob")
	a := join(t, addr, ana)
	b := join(t, addr, bob)
	a.Expect(bob + " has arrived")
	for _, tc := range []struct{ name, sent, shown string }{
		{"colour escape", "\x1b[31mred", "\uFFFD[31mred"},
		{"window title (OSC)", "\x1b]0;pwned\x07", "\uFFFD]0;pwned\uFFFD"},
		{"bell", "ding\x07", "ding\uFFFD"},
		{"carriage return mid-line", "real\rfake", "real\uFFFDfake"},
		{"C1 control (CSI)", "\u009b31m", "\uFFFD31m"},
		{"invalid UTF-8", "bad \xff\xfe byte", "bad \uFFFD byte"},
		{"backspace and delete", "ab\x08\x7f", "ab\uFFFD\uFFFD"},
		{"letters of any script", "héllo ńo 日本 😀", "héllo ńo 日本 😀"},
		{"right-to-left override", "x\u202Eevil.exe\u202C is \u202Efdp.txt", "x\uFFFDevil.exe\uFFFD is \uFFFDfdp.txt"},
		{"bidi isolates and marks", "\u2067a\u2069 \u200Eb\u200F \u061Cc", "\uFFFDa\uFFFD \uFFFDb\uFFFD \uFFFDc"},
		{"invisible format characters", "zero\u200Bwidth \uFEFFbom soft\u00ADhyphen", "zero\uFFFDwidth \uFFFDbom soft\uFFFDhyphen"},
		{"hidden tag characters", "a\U000E0068\U000E0069b", "a\uFFFD\uFFFDb"},
		{"line and paragraph separators", "one\u2028two\u2029three", "one\uFFFDtwo\uFFFDthree"},
		{"emoji sequences (ZWJ, variation selector, skin tone, flag, keycap)",
			"👩\u200D👩\u200D👧 ❤\uFE0F 👍🏽 🇫🇷 1\uFE0F\u20E3", "👩\u200D👩\u200D👧 ❤\uFE0F 👍🏽 🇫🇷 1\uFE0F\u20E3"},
		{"a joiner that Persian needs", "می\u200Cخواهم", "می\u200Cخواهم"},
	} {
		b.Send(tc.sent)
		b.Expect(bob + " says: " + tc.shown)
		a.Expect(bob + " says: " + tc.shown)
	}
}

func TestLongLineGetsAnErrorAndADisconnect(t *testing.T) {
	for _, atPrompt := range []bool{false, true} {
		t.Run(fmt.Sprint("at the prompt: ", atPrompt), func(t *testing.T) {
			chattest.Parallel(t)
			addr := chattest.Start(t, serveDefault)
			ana := chattest.Name("ana")
			a := join(t, addr, ana)
			var b *chattest.Client
			if atPrompt {
				b = chattest.Dial(t, addr)
				b.ExpectText(prompt)
			} else {
				bob := chattest.Name("bob")
				b = join(t, addr, bob)
				a.Expect(bob + " has arrived")
				defer a.Expect(bob + " left the chat")
			}
			b.Send(strings.Repeat("x", maxLine+1))
			b.Expect(fmt.Sprintf("line too long (max %d bytes)", maxLine))
			b.ExpectClosed()
		})
	}
}

func TestLineAtTheLimitIsDelivered(t *testing.T) {
	chattest.Parallel(t)
	addr := chattest.Start(t, serveDefault)
	name := chattest.Name("ana")
	a := join(t, addr, name)
	text := strings.Repeat("y", maxLine-1) // plus "\n": maxLine bytes
	a.Send(text)
	a.Expect(name + " says: " + text)
}

// A client that never reads must not stall the room: it is disconnected once
// maxPending bytes wait for it, the others see it leave, and they never miss
// a line.
func TestStuckClientIsDroppedAndTheRoomGoesOn(t *testing.T) {
	chattest.Parallel(t)
	addr := chattest.Start(t, serveDefault)
	stuckName, talkerName, listenerName := chattest.Name("stuck"), chattest.Name("talker"), chattest.Name("listener")
	stuck := join(t, addr, stuckName)
	require.NoError(t, stuck.Conn().SetReadBuffer(4096))
	talker := join(t, addr, talkerName)
	listener := join(t, addr, listenerName)
	talker.Expect(listenerName + " has arrived")

	text := strings.Repeat("z", 1000)
	left := stuckName + " left the chat"
	const most = 20000 // 20 MB: far more than the kernel's buffers and maxPending
	dropped := false
	for i := 0; i < most && !dropped; i += 100 {
		batch := make([]string, 100)
		for j := range batch {
			batch[j] = fmt.Sprintf("%d %s", i+j, text)
		}
		talker.Send(batch...)
		for _, line := range batch {
			for _, c := range []*chattest.Client{talker, listener} {
				skipped := c.UntilDespite(stuck, talkerName+" says: "+line)
				switch {
				case len(skipped) == 0:
				case slices.Equal(skipped, []string{left}):
					dropped = true
				default:
					t.Fatalf("%s expected %.60q, got %.200q before it: only %q may come between two of the talker's lines",
						c.Who(), talkerName+" says: "+line, skipped, left)
				}
			}
		}
	}
	require.True(t, dropped, "the stuck client was never dropped")
	talker.Send("after")
	listener.Expect(talkerName + " says: after")
}

// A client that floods as fast as its own echo comes back must not get any
// healthy reader dropped, however long it goes on.
func TestFloodingNeverDropsAHealthyReader(t *testing.T) {
	chattest.Parallel(t)
	addr := chattest.Start(t, serveDefault)
	names := []string{chattest.Name("f"), chattest.Name("f")}
	flooders := []*chattest.Client{join(t, addr, names[0]), join(t, addr, names[1])}
	reader := join(t, addr, chattest.Name("reader"))
	const n, window = 5000, 200
	err := chattest.Concurrently(len(flooders), func(i int) error {
		return flooders[i].Flood(n, window, "x", says(names[i]))
	})
	require.NoError(t, err)
	count := map[string]int{}
	for count[names[0]]+count[names[1]] < 2*n {
		line := reader.Line("a flooded line")
		require.NotContains(t, line, " left the chat", "a client was dropped")
		if sender, _, ok := strings.Cut(line, " says: "); ok {
			count[sender]++
		}
	}
}

// One client floods the room with 200,000 empty lines, as fast as TCP
// takes them, while five others read at full speed. Its lines are slowed
// to its rate (in a second, no reader gets more than 5,000 of them), and
// no reader loses its seat: each still hears its own next message.
func TestAFloodIsSlowedAndNoReaderIsDropped(t *testing.T) {
	chattest.Parallel(t)
	// Not on a shared server (CHAT_ADDR): the flooder's backlog, already in
	// the server's socket, would reach the room for minutes after this test.
	chattest.Own(t, "its flood would reach the tests after it")
	addr := chattest.Start(t, serveDefault)
	flooderName := chattest.Name("flooder")
	flooder := join(t, addr, flooderName)
	names := make([]string, 5)
	readers := make([]*chattest.Client, len(names))
	for i := range names {
		names[i] = chattest.Name("reader")
		readers[i] = join(t, addr, names[i])
	}
	const lines, most = 200000, 5000
	flooded := make(chan error, 1)
	go func() { flooded <- flooder.TrySend(strings.Repeat("\n", lines-1)) }()
	discarded := make(chan error, 1) // the flooder reads at full speed too
	go func() { _, err := io.Copy(io.Discard, flooder.Conn()); discarded <- err }()
	seen := make([]int, len(readers)) // the flooder's lines each reader got in a second
	err := chattest.Concurrently(len(readers), func(i int) (err error) {
		seen[i], err = readers[i].ReadThroughFlood(says(flooderName)(""), lines, time.Second,
			"still here", says(names[i])("still here"))
		return err
	})
	assert.NoError(t, err, "a reader was dropped, or starved, during the flood")
	for i, n := range seen {
		assert.LessOrEqual(t, n, most, "%s got %d of the flooder's lines in one second: "+
			"the flood was not slowed (the reference server lets about 2,000 through)", names[i], n)
	}
	flooder.Close()
	<-flooded // a write error is expected: the flooder was closed mid-flood
	<-discarded
}

// A thousand clients in the room at once: all are announced, all hear the
// same line, and all leave, each in one of the three ways (close, reset,
// half-close), announced once. They join and catch up chattest.AtOnce at a
// time, so that no one wait has to outlast the whole room's work.
func TestAThousandClientsComeTalkAndGo(t *testing.T) {
	// Not parallel: the other tests' waits need not allow for its load.
	if testing.Short() {
		t.Skip("slow: -short")
	}
	addr := chattest.Start(t, serveDefault)
	const n = 1000
	obsName := chattest.Name("observer")
	observer := join(t, addr, obsName)
	clients := make([]*chattest.Client, n)
	names := make([]string, n)
	for i := range names {
		names[i] = chattest.Name("c")
	}
	require.NoError(t, chattest.ConcurrentlyAtMost(n, chattest.AtOnce, func(i int) (err error) {
		if clients[i], err = tryJoin(t, addr, names[i]); err != nil {
			return fmt.Errorf("client %d (%s), joining: %w", i, names[i], err)
		}
		return nil
	}))
	arrived := map[string]bool{}
	for len(arrived) < n {
		line := observer.Line(fmt.Sprintf("arrival %d of %d", len(arrived)+1, n))
		who, ok := strings.CutSuffix(line, " has arrived")
		require.True(t, ok, "expected only arrivals, got %q", line)
		arrived[who] = true
	}
	observer.Send("welcome, all")
	require.NoError(t, chattest.ConcurrentlyAtMost(n, chattest.AtOnce, func(i int) error {
		if _, err := clients[i].TryUntil(obsName + " says: welcome, all"); err != nil {
			return fmt.Errorf("client %d (%s), waiting for the welcome: %w", i, names[i], err)
		}
		return nil
	}))
	for i, c := range clients {
		switch i % 3 {
		case 0:
			c.Close()
		case 1:
			c.Reset()
		case 2:
			require.NoError(t, c.Conn().CloseWrite())
		}
	}
	left := map[string]bool{}
	for len(left) < n {
		line := observer.Line(fmt.Sprintf("departure %d of %d", len(left)+1, n))
		if who, ok := strings.CutSuffix(line, " left the chat"); ok {
			assert.False(t, left[who], "%s left twice", who)
			left[who] = true
		}
	}
}

// The broadcaster plus a reader and a writer per client: 2n+2 goroutines
// with n clients, counting serve's own, whether or not they have a name yet.
// The exit guide is a function of the broadcaster, not a goroutine.
func TestTwoGoroutinesPerClient(t *testing.T) {
	chattest.InProcess(t)
	base := chattest.Baseline(t)
	addr := chattest.Start(t, serveDefault)
	chattest.WaitGoroutines(t, base+2, "serve and the broadcaster")
	const n = 20
	var clients []*chattest.Client
	for range n / 2 {
		clients = append(clients, join(t, addr, chattest.Name("c")))
		c := chattest.Dial(t, addr)
		c.ExpectText(prompt)
		clients = append(clients, c)
	}
	chattest.WaitGoroutines(t, base+2+2*n, fmt.Sprintf("%d clients", n))
	for _, c := range clients {
		c.Close()
	}
	chattest.WaitGoroutines(t, base+2, "all clients gone")
}

// flakyListener fails its first Accepts, like a server out of file descriptors.
type flakyListener struct {
	net.Listener
	failures int
}

func (l *flakyListener) Accept() (net.Conn, error) {
	if l.failures > 0 {
		l.failures--
		return nil, fmt.Errorf("accept: %w", syscall.EMFILE)
	}
	return l.Listener.Accept()
}

func TestAcceptErrorsDoNotStopTheServer(t *testing.T) {
	chattest.InProcess(t)
	chattest.Parallel(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := chattest.StartOn(t, &flakyListener{Listener: ln, failures: 3}, serveDefault)
	join(t, addr, chattest.Name("ana"))
}

// The program logs where it listens, so that whoever started it knows
// where to connect.
func TestProgramLogsWhereItListens(t *testing.T) {
	chattest.Parallel(t)
	chattest.StartProcess(t, "-addr", "127.0.0.1:0").ExpectListening()
}

// On SIGTERM everyone, named or still at the prompt, is told, and the
// program exits 0.
func TestProgramSaysGoodbyeAndStopsOnSIGTERM(t *testing.T) {
	chattest.Parallel(t)
	sayGoodbyeOn(t, syscall.SIGTERM)
}

// Ctrl-C in the server's terminal sends SIGINT: the same goodbye.
func TestProgramSaysGoodbyeAndStopsOnSIGINT(t *testing.T) {
	chattest.Parallel(t)
	sayGoodbyeOn(t, syscall.SIGINT)
}

func sayGoodbyeOn(t *testing.T, sig syscall.Signal) {
	p := chattest.StartProcess(t, "-addr", "127.0.0.1:0")
	name := chattest.Name("ana")
	a := join(t, p.Addr, name)
	waiting := chattest.Dial(t, p.Addr)
	waiting.ExpectText(prompt)
	assert.Equal(t, 0, p.Stop(sig, writeTimeout+2*time.Second), "exit status on %v", sig)
	for _, c := range []*chattest.Client{a, waiting} {
		c.Expect("server is shutting down")
		c.ExpectClosed()
	}
}

// With -maxconns 3, a fourth connection is told that the server is full,
// and closed; the three go on, and once one has left, a newcomer gets in.
// (It starts the program with its own flags: graded with CHAT_CMD, not
// with CHAT_ADDR.)
func TestConnectionsBeyondMaxconnsAreRefused(t *testing.T) {
	chattest.Parallel(t)
	p := chattest.StartProcess(t, "-addr", "127.0.0.1:0", "-maxconns", "3")
	ana, bob := chattest.Name("ana"), chattest.Name("bob")
	a := join(t, p.Addr, ana)
	b := join(t, p.Addr, bob)
	waiting := chattest.Dial(t, p.Addr)
	waiting.ExpectText(prompt)
	refused := chattest.Dial(t, p.Addr)
	refused.Expect("server is full")
	refused.ExpectClosed()
	a.Send("still here")
	b.Expect(ana + " says: still here")
	waiting.Close()
	// Its seat is free once the server has seen it out, a moment later:
	// until then a newcomer is refused, so try until one gets the prompt.
	full := "server is full\n"
	for deadline := time.Now().Add(chattest.Timeout); ; {
		c := chattest.Dial(t, p.Addr)
		require.NoError(t, c.Conn().SetReadDeadline(deadline))
		got := make([]byte, len(full))
		_, err := io.ReadFull(c.Conn(), got)
		require.NoError(t, err, "a newcomer expected the prompt or %q", full)
		if string(got) == prompt[:len(full)] {
			break
		}
		require.Equal(t, full, string(got), "a newcomer expected the prompt or %q", full)
		require.True(t, time.Now().Before(deadline), "still refused %v after a client left", chattest.Timeout)
		c.Close()
	}
}

// Shutdown waits at most writeTimeout for a client that never reads. Over
// net.Pipe, which has no buffer, its writer is blocked from the first
// prompt; without the bound, synctest would report a deadlock.
func TestShutdownWaitsAtMostWriteTimeoutForAStuckClient(t *testing.T) {
	chattest.InProcess(t)
	synctest.Test(t, func(t *testing.T) {
		ln := chattest.NewPipeListener()
		ctx, cancel := context.WithCancel(t.Context())
		served := make(chan error, 1)
		go func() { served <- serveDefault(ctx, ln) }()
		stuck := ln.Dial() // and never read from
		defer stuck.Close()
		synctest.Wait() // its writer is blocked on the prompt
		start := time.Now()
		cancel()
		require.NoError(t, <-served)
		assert.Equal(t, writeTimeout, time.Since(start))
	})
}

func TestCheckName(t *testing.T) {
	chattest.OwnCode(t)
	for _, tc := range []struct{ sent, name string }{ // name "": refused
		{"ana", "ana"}, {" Ana_B-2 ", "ana_b-2"}, {"نجمة٣", "نجمة٣"}, {"नमस्ते", "नमस्ते"},
		{"12345678901234567890", "12345678901234567890"}, {"ＡＮＡ", "ana"}, {"jose\u0301", "jos\u00e9"},
		{"_jos\u00e9", "_jos\u00e9"}, {"2ü", "2ü"}, {"東京tokyo", "東京tokyo"}, {"서울seoul", "서울seoul"}, {"e\u0301\u0302\u0303\u0304", "\u00e9\u0302\u0303\u0304"},
		{"", ""}, {"123456789012345678901", ""}, {"a.b", ""}, {"a\tb", ""}, {"<b>", ""},
		{"ana\uFE0F", ""}, {"\u3164", ""}, {"٣", ""}, {"ana٣", ""}, {"аna", ""},
		{"e\u0301\u0302\u0303\u0304\u0306", ""}, {"e\u0301\u0301", ""},
	} {
		name, err := checkName(tc.sent)
		assert.Equal(t, tc.name, name, "checkName(%q) returned %q, %v", tc.sent, name, err)
		assert.Equal(t, tc.name == "", err != nil, "checkName(%q) returned %q, %v", tc.sent, name, err)
	}
}

func TestSanitizeKeepsPrintableTextAndReplacesTheRest(t *testing.T) {
	chattest.OwnCode(t)
	for in, want := range map[string]string{
		"":                         "",
		"plain text":               "plain text",
		"tab\there":                "tab\uFFFDhere",
		"nul\x00":                  "nul\uFFFD",
		"\xc3":                     "\uFFFD",
		"\u0085next line":          "\uFFFDnext line",
		"mixed \xff\x1b[0m":        "mixed \uFFFD\uFFFD[0m",
		"x\u202Eevil\u202C":        "x\uFFFDevil\uFFFD",
		"\u2066\u2067\u2068\u2069": "\uFFFD\uFFFD\uFFFD\uFFFD",
		"\u200E\u200F\u061C":       "\uFFFD\uFFFD\uFFFD",
		"\u200B\u2060\uFEFF":       "\uFFFD\uFFFD\uFFFD",
		"a\u2028b\u2029":           "a\uFFFDb\uFFFD",
		"👩\u200D👧 ❤\uFE0F":         "👩\u200D👧 ❤\uFE0F",
		"می\u200Cخواهم":            "می\u200Cخواهم",
		"\u00A0no-break\u3000":     "\u00A0no-break\u3000",
	} {
		assert.Equal(t, want, sanitize(in), "sanitize(%q)", in)
	}
}
