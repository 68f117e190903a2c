package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"gochat-steps/internal/chattest"

	cdpbrowser "github.com/chromedp/cdproto/browser"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The page in a real browser: headless Chromium, driven over the DevTools
// protocol by chromedp. Each test starts its own browser, and each wait
// has a deadline: a poll of a condition in the page, never a sleep.

// browser starts a headless Chromium for the test, or skips the test when
// there is none; in CI (CI=true) a missing Chromium is a failure.
func browser(t *testing.T) context.Context {
	t.Helper()
	chattest.InProcess(t)
	path, err := exec.LookPath("chromium")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("CI needs Chromium for the browser test: apt-get install -y chromium")
		}
		t.Skip("no Chromium on this machine: `apt-get install -y chromium` (Debian) to run the browser test")
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.NoSandbox, // CI runs as root
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-quic", true),
	)
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancelAlloc)
	ctx, cancel := chromedp.NewContext(alloc)
	t.Cleanup(cancel)
	require.NoError(t, chromedp.Do(ctx)) // start the browser, without a timeout
	return ctx
}

// open opens url in a new tab of the browser, w by h pixels.
func open(t *testing.T, browser context.Context, url string, w, h int64) context.Context {
	t.Helper()
	ctx, cancel := chromedp.NewContext(browser)
	t.Cleanup(cancel)
	ctx, cancelTimeout := context.WithTimeout(ctx, 6*chattest.Timeout)
	t.Cleanup(cancelTimeout)
	require.NoError(t, chromedp.Do(ctx, chromedp.EmulateViewport(w, h), chromedp.Navigate(url)))
	return ctx
}

// tab opens the page in a new tab and joins as name.
func tab(t *testing.T, browser context.Context, url, name string) context.Context {
	t.Helper()
	ctx := open(t, browser, url, 1000, 700)
	enter(t, ctx, name)
	return ctx
}

// enter joins the chat as name, on a page that shows the name form.
func enter(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	assert.Equal(t, "name form shown, message form hidden", forms(t, ctx))
	require.NoError(t, chromedp.Do(ctx, chromedp.SendKeys("#name", name+"\n"))) // Enter submits the form
	wait(t, ctx, `!document.getElementById("say").hidden`, name+" has joined: the message form is shown")
	assert.Equal(t, "name form hidden, message form shown", forms(t, ctx))
}

// forms says which of the page's two forms a person can see.
func forms(t *testing.T, ctx context.Context) string {
	t.Helper()
	shown := eval[string](t, ctx, `
		["join", "say"].map(id => getComputedStyle(document.getElementById(id)).display === "none" ? "hidden" : "shown").join(" ")`)
	name, message, _ := strings.Cut(shown, " ")
	return "name form " + name + ", message form " + message
}

// eval returns the value of a JavaScript expression in the page.
func eval[T any](t *testing.T, ctx context.Context, js string) T {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](js))
	require.NoError(t, err, "evaluating %s", js)
	return v
}

// wait waits until the JavaScript expression cond is true in the page, or
// fails the test saying what it waited for, and what the page shows.
func wait(t *testing.T, ctx context.Context, cond, what string) {
	t.Helper()
	waitWithin(t, ctx, chattest.Timeout, cond, what)
}

// retryWait is how long a page may take to get back in once the server is:
// it tries again every 10 s at most (chat.js).
const retryWait = 10*time.Second + chattest.Timeout

func waitWithin(t *testing.T, ctx context.Context, timeout time.Duration, cond, what string) {
	t.Helper()
	// Every 50 ms: the default, on every animation frame, stops in a hidden tab.
	_, err := chromedp.Run(ctx, chromedp.Poll[bool](cond,
		chromedp.WithPollingTimeout(timeout), chromedp.WithPollingInterval(50*time.Millisecond)))
	if err != nil {
		text, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body.innerText`))
		t.Fatalf("waited for this, in vain (%v): %s\nThe page shows:\n%s", err, what, text)
	}
}

// logText waits until the page's message log contains want, and returns it.
func logText(t *testing.T, ctx context.Context, want string) string {
	t.Helper()
	wait(t, ctx, `document.getElementById("log").innerText.includes(`+jsString(want)+`)`, "the log shows "+want)
	return eval[string](t, ctx, `document.getElementById("log").innerText`)
}

// say types text into the message box, and sends it with Enter.
func say(t *testing.T, ctx context.Context, text string) {
	t.Helper()
	require.NoError(t, chromedp.Do(ctx, chromedp.SendKeys("#text", text+"\n")))
}

func jsString(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(s) + `"`
}

func TestTwoBrowserTabsChat(t *testing.T) {
	b := browser(t)
	addr := start(t, defaults)
	url := "http://" + addr + "/"

	// Someone talks before the tabs join: the history.
	early := join(t, addr, chattest.Name("early"))
	early.send("said before you came")
	early.expect(says(early.name, "said before you came"))

	ana, bob := chattest.Name("ana"), chattest.Name("bob")
	tabA := tab(t, b, url, ana)
	logText(t, tabA, "said before you came")
	tabB := tab(t, b, url, bob)
	logText(t, tabB, "said before you came")
	logText(t, tabA, bob+" joined")

	say(t, tabA, "hello from a browser")
	logText(t, tabA, "hello from a browser")
	logText(t, tabB, "hello from a browser")
	mine := `[...document.querySelectorAll("#log li.mine")].map(li => li.innerText).join("\n")`
	assert.Contains(t, eval[string](t, tabA, mine), "hello from a browser", "a tab tells its own messages apart")
	assert.NotContains(t, eval[string](t, tabB, mine), "hello from a browser", "someone else's message marked as one's own")
	stamp := eval[string](t, tabB, `document.querySelector("#log li.msg:last-child time").dateTime`)
	at, err := time.Parse(time.RFC3339, stamp)
	require.NoError(t, err, "each message shows the server's time")
	assert.WithinDuration(t, time.Now(), at, time.Minute)

	say(t, tabB, "<b>x</b>")
	text := logText(t, tabA, "<b>x</b>") // shown literally, tags and all
	assert.Contains(t, text+"\n", bob+" <b>x</b>\n")
	// Every <b> on the page is an author's name, one per chat line: none
	// came from the message.
	bolds := eval[int](t, tabA, `document.querySelectorAll("#log b").length`)
	lines := eval[int](t, tabA, `document.querySelectorAll("#log li.msg").length`)
	assert.Equal(t, lines, bolds, "a <b> element came from a message")
}

func TestThePageShowsWhyANameIsRefused(t *testing.T) {
	b := browser(t)
	addr := start(t, defaults)
	taken := join(t, addr, chattest.Name("ana"))
	ctx := open(t, b, "http://"+addr+"/", 1000, 700)
	assert.Contains(t, eval[string](t, ctx, `document.getElementById("intro").innerText`), "A chat room",
		"the first screen says what this is")
	font := `getComputedStyle(document.querySelector("#join %s")).font`
	assert.Equal(t, eval[string](t, ctx, fmt.Sprintf(font, "input")), eval[string](t, ctx, fmt.Sprintf(font, "button")),
		"the Join button's font is the name box's")
	require.NoError(t, chromedp.Do(ctx, chromedp.SendKeys("#name", taken.name+"\n")))
	wait(t, ctx, `document.getElementById("error").textContent === "name is taken"`, "the page says: name is taken")
	assert.Equal(t, "name form shown, message form hidden", forms(t, ctx))
}

// Joining while the server is down: the page says so, keeps trying, and
// gets in once the server is back.
func TestJoiningWhileTheServerIsDownSaysSoAndRetries(t *testing.T) {
	b := browser(t)
	p := chattest.StartProcess(t, "-addr", "127.0.0.1:0")
	ctx := open(t, b, "http://"+p.Addr+"/", 1000, 700)
	assert.Equal(t, 0, p.Stop(syscall.SIGTERM, writeTimeout+2*time.Second))
	name := chattest.Name("ana")
	require.NoError(t, chromedp.Do(ctx, chromedp.SendKeys("#name", name+"\n")))
	wait(t, ctx, `document.getElementById("error").textContent.startsWith("cannot connect to the server: trying again in")`,
		"the page says it cannot connect to the server, and will try again")
	chattest.StartProcess(t, "-addr", p.Addr)
	waitWithin(t, ctx, retryWait, `document.getElementById("log").innerText.includes(`+jsString("you joined as "+name)+`)`,
		"the page gets in once the server is back")
	wait(t, ctx, `document.getElementById("error").textContent === ""`, "the error is gone once in")
}

// The server restarts: the page keeps its log, marks the gap, tells why
// the server closed the connection, and sends what was typed meanwhile
// once it is back in.
func TestARestartKeepsTheLogAndSendsWhatWasTypedMeanwhile(t *testing.T) {
	b := browser(t)
	p := chattest.StartProcess(t, "-addr", "127.0.0.1:0")
	url := "http://" + p.Addr + "/"
	ana, bob := chattest.Name("ana"), chattest.Name("bob")
	ctx := tab(t, b, url, ana)
	bb := join(t, p.Addr, bob)
	bb.send("said before the restart")
	logText(t, ctx, "said before the restart")

	assert.Equal(t, 0, p.Stop(syscall.SIGTERM, writeTimeout+2*time.Second))
	logText(t, ctx, "the server closed the connection: server is shutting down")
	wait(t, ctx, `document.getElementById("state").textContent.includes(", retrying in")`,
		"the header says the page is disconnected, and retrying")
	say(t, ctx, "typed while the server was down")
	wait(t, ctx, `document.querySelector("#log .pending")?.innerText.includes("typed while the server was down")`,
		"what was typed while down is shown as not sent yet")

	// The server comes back on the same address: the page rejoins by itself.
	chattest.StartProcess(t, "-addr", p.Addr)
	waitWithin(t, ctx, retryWait, `document.getElementById("state").textContent === "connected"`,
		"the page gets back in once the server is back")
	text := logText(t, ctx, "back, as "+ana)
	cat := join(t, p.Addr, chattest.Name("cat"))
	require.NoError(t, cat.tryUntil(says(ana, "typed while the server was down")),
		"%s should send what was typed while the server was down, once back", ana)
	assert.Contains(t, text, "said before the restart", "the log from before the restart is kept")
	gaps := eval[string](t, ctx, `[...document.querySelectorAll("#log .gap")].map(li => li.innerText).join("\n")`)
	assert.Contains(t, gaps, "connection lost", "the gap is marked")
	logText(t, ctx, ana+" typed while the server was down")
	assert.Equal(t, 0, eval[int](t, ctx, `document.querySelectorAll("#log .pending").length`),
		"once sent, nothing is shown as not sent")
}

// /quit in the page leaves for good: the page says so, shows the name form
// again, and does not rejoin by itself as it does when a connection drops.
func TestQuitInThePageLeavesForGood(t *testing.T) {
	b := browser(t)
	addr := start(t, defaults)
	ana, bob := chattest.Name("ana"), chattest.Name("bob")
	ctx := tab(t, b, "http://"+addr+"/", ana)
	bb := join(t, addr, bob)
	say(t, ctx, "/quit")
	bb.expect(message{Event: "left", Body: ana})
	text := logText(t, ctx, "you left")
	assert.NotContains(t, text, "connection lost", "/quit is not a dropped connection")
	assert.Equal(t, "name form shown, message form hidden", forms(t, ctx))
	// A dropped connection is retried after 1 s: a page that rejoins would
	// say "connecting…" within 2.
	state := func() bool {
		s, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.getElementById("state").textContent`))
		return err != nil || s != "not connected"
	}
	assert.Never(t, state, 2*time.Second, 50*time.Millisecond, "after /quit, the page tried to rejoin")
	bb.send("still here")
	bb.expect(says(bob, "still here")) // and not ana's arrival
}

// An open tab is not idle: the server's pings keep it in, and the browser
// answers them by itself, however quiet its reader.
func TestAQuietTabStaysConnectedWellPastIdle(t *testing.T) {
	b := browser(t)
	idle := time.Second
	addr := start(t, options{idle: idle, history: 10, maxConns: 10})
	ana := chattest.Name("ana")
	ctx := tab(t, b, "http://"+addr+"/", ana)
	// Four times -idle, with nothing typed: the page must stay connected.
	_, err := chromedp.Run(ctx, chromedp.Poll[bool](
		`document.getElementById("state").textContent !== "connected" || document.getElementById("log").innerText.includes("closed the connection")`,
		chromedp.WithPollingTimeout(4*idle), chromedp.WithPollingInterval(50*time.Millisecond)))
	if err == nil {
		t.Fatalf("%s, a tab left open, was disconnected within 4 times -idle (%v); its log:\n%s",
			ana, 4*idle, eval[string](t, ctx, `document.getElementById("log").innerText`))
	}
	require.ErrorIs(t, err, chromedp.ErrPollingTimeout)
	say(t, ctx, "still here")
	assert.NotContains(t, logText(t, ctx, ana+" still here"), "connection lost", "the tab was disconnected, then came back")
}

// A reader who scrolled back keeps their place when a message comes: the
// page offers a button to the newest instead of jumping there.
func TestTheScrollPositionHoldsWhileReadingBack(t *testing.T) {
	b := browser(t)
	addr := start(t, defaults)
	ctx := tab(t, b, "http://"+addr+"/", chattest.Name("ana"))
	bob := join(t, addr, chattest.Name("bob"))
	for i := range 40 {
		bob.send(fmt.Sprint("message ", i))
	}
	logText(t, ctx, "message 39")
	atEnd := `(l => l.scrollHeight - l.scrollTop - l.clientHeight < 5)(document.getElementById("log"))`
	require.True(t, eval[bool](t, ctx, atEnd), "a reader at the end follows new messages")
	eval[int](t, ctx, `document.getElementById("log").scrollTop = 0`)
	bob.send("one more")
	logText(t, ctx, "one more")
	assert.Equal(t, 0, eval[int](t, ctx, `document.getElementById("log").scrollTop`), "the reader was pulled away from where they were reading")
	require.False(t, eval[bool](t, ctx, `document.getElementById("newer").hidden`), "no button to the new messages")
	require.NoError(t, chromedp.Do(ctx, chromedp.Click("#newer")))
	wait(t, ctx, atEnd+` && document.getElementById("newer").hidden`, "the button scrolls to the newest, and goes away")
}

// On a phone, 390 pixels wide, long words and links wrap: nothing is wider
// than the screen. Links are links, http and https only.
func TestLongWordsWrapOnAPhone(t *testing.T) {
	b := browser(t)
	addr := start(t, defaults)
	ctx := open(t, b, "http://"+addr+"/", 390, 844)
	_, err := chromedp.Call(ctx, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{
		Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: "dark"}},
	})
	require.NoError(t, err)
	assert.Equal(t, "rgb(21, 25, 30)", eval[string](t, ctx, `getComputedStyle(document.body).backgroundColor`),
		"dark mode: the page follows the reader's prefers-color-scheme")
	ana := chattest.Name("ana")
	require.NoError(t, chromedp.Do(ctx, chromedp.SendKeys("#name", ana+"\n")))
	link := "https://example.com/" + strings.Repeat("a-long-path/", 11) + "end?q=1"
	bob := join(t, addr, chattest.Name("bob"))
	bob.send(strings.Repeat("w", 300))
	bob.send("see " + link + ", and javascript:alert(1) http://x.example/.")
	logText(t, ctx, "javascript:alert(1)")
	assert.LessOrEqual(t, eval[int](t, ctx, `document.documentElement.scrollWidth`), 390, "the page is wider than the phone")
	// An element whose content overflows it, even if only it scrolls.
	wide := eval[string](t, ctx, `[...document.querySelectorAll("body *")]
		.filter(e => e.getBoundingClientRect().right > 390 || e.scrollWidth > e.clientWidth)
		.map(e => e.tagName + "#" + e.id + " " + e.innerText.slice(0, 20)).join(", ")`)
	assert.Empty(t, wide, "elements wider than the phone's screen, or whose text is")
	links := eval[[]string](t, ctx, `[...document.querySelectorAll("#log a")].map(a => a.href + " " + a.rel + " " + a.textContent)`)
	assert.Equal(t, []string{link + " noopener noreferrer " + link, "http://x.example/ noopener noreferrer http://x.example/"}, links,
		"links: the http(s) URLs, without the punctuation after them, and nothing else")
}

// The list of who is here: from the welcome, then kept by arrivals and
// departures.
func TestTheListOfWhoIsHereFollowsJoinsAndLeaves(t *testing.T) {
	b := browser(t)
	addr := start(t, defaults)
	ana, bob, cat := chattest.Name("ana"), chattest.Name("bob"), chattest.Name("cat")
	bb := join(t, addr, bob)
	ctx := tab(t, b, "http://"+addr+"/", ana)
	people := `[...document.querySelectorAll("#people li")].map(li => li.textContent).join(" ")`
	whoIsHere := func(want ...string) {
		t.Helper()
		js := jsString(strings.Join(want, " "))
		wait(t, ctx, people+` === `+js, "the list of who is here shows "+js)
	}
	whoIsHere(ana, bob)
	assert.Equal(t, ana, eval[string](t, ctx, `document.querySelector("#people li.me").textContent`), "the list marks who you are")
	join(t, addr, cat)
	whoIsHere(ana, bob, cat)
	bb.send("/quit")
	whoIsHere(ana, cat)
	assert.Equal(t, "2", eval[string](t, ctx, `document.getElementById("count").textContent`))
}

// While the tab is hidden, its title counts the messages that came; once
// it is seen again, the count goes.
func TestTheTitleCountsUnreadMessagesWhileHidden(t *testing.T) {
	b := browser(t)
	addr := start(t, defaults)
	ana := chattest.Name("ana")
	ctx := tab(t, b, "http://"+addr+"/", ana)
	bob := join(t, addr, chattest.Name("bob"))
	window, err := chromedp.CallBrowser(ctx, cdpbrowser.GetWindowForTarget,
		cdpbrowser.GetWindowForTargetParams{TargetID: chromedp.FromContext(ctx).Target.TargetID})
	require.NoError(t, err)
	setWindow := func(state cdpbrowser.WindowState) {
		t.Helper()
		_, err := chromedp.CallBrowser(ctx, cdpbrowser.SetWindowBounds,
			cdpbrowser.SetWindowBoundsParams{WindowID: window.WindowID, Bounds: &cdpbrowser.Bounds{WindowState: state}})
		require.NoError(t, err)
	}
	bob.send("seen")
	logText(t, ctx, "seen")
	assert.Equal(t, "gochat", eval[string](t, ctx, `document.title`), "a message read as it came is not unread")
	setWindow(cdpbrowser.WindowStateMinimized)
	wait(t, ctx, `document.hidden`, "the tab is hidden once its window is minimised")
	bob.send("one")
	bob.send("two")
	logText(t, ctx, "two")
	say(t, ctx, "my own") // not unread: ana wrote it
	logText(t, ctx, "my own")
	assert.Equal(t, "(2) gochat", eval[string](t, ctx, `document.title`), "two messages came while the tab was hidden")
	setWindow(cdpbrowser.WindowStateNormal)
	wait(t, ctx, `document.title === "gochat"`, `the title is "gochat" again once the tab is seen`)
}
