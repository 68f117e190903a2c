package main

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"gochat-steps/internal/chattest"

	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// browser starts a headless Chromium for the test, or skips the test when
// there is none; in CI (CI=true) a missing Chromium is a failure.
func browser(t *testing.T) context.Context {
	t.Helper()
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

// tab opens the page in a new tab of the browser and joins as name.
func tab(t *testing.T, browser context.Context, url, name string) context.Context {
	t.Helper()
	ctx, cancel := chromedp.NewContext(browser)
	t.Cleanup(cancel)
	ctx, cancelTimeout := context.WithTimeout(ctx, 3*chattest.Timeout)
	t.Cleanup(cancelTimeout)
	require.NoError(t, chromedp.Do(ctx, chromedp.Navigate(url)))
	assert.Equal(t, "name form shown, message form hidden", forms(t, ctx))
	require.NoError(t, chromedp.Do(ctx,
		chromedp.SendKeys("#name", name+"\n"), // Enter submits the form
		chromedp.WaitVisible("#text"),
	))
	assert.Equal(t, "name form hidden, message form shown", forms(t, ctx))
	return ctx
}

// forms says which of the page's two forms a person can see.
func forms(t *testing.T, ctx context.Context) string {
	t.Helper()
	shown, err := chromedp.Run(ctx, chromedp.Evaluate[string](`
		["join", "say"].map(id => getComputedStyle(document.getElementById(id)).display === "none" ? "hidden" : "shown").join(" ")`))
	require.NoError(t, err)
	name, message, _ := strings.Cut(shown, " ")
	return "name form " + name + ", message form " + message
}

// logText waits until the page's message log contains want, and returns it.
func logText(t *testing.T, ctx context.Context, want string) string {
	t.Helper()
	_, err := chromedp.Run(ctx, chromedp.Poll[bool](
		`document.getElementById("log").innerText.includes(`+jsString(want)+`)`,
		chromedp.WithPollingTimeout(chattest.Timeout)))
	text, textErr := chromedp.Run(ctx, chromedp.Text("#log"))
	require.NoError(t, textErr)
	require.NoError(t, err, "the page never showed %q; it shows:\n%s", want, text)
	return text
}

func jsString(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(s) + `"`
}

func TestTwoBrowserTabsChat(t *testing.T) {
	chattest.InProcess(t)
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

	require.NoError(t, chromedp.Do(tabA, chromedp.SendKeys("#text", "hello from a browser\n")))
	logText(t, tabB, "hello from a browser")

	require.NoError(t, chromedp.Do(tabB, chromedp.SendKeys("#text", "<b>x</b>\n")))
	text := logText(t, tabA, "<b>x</b>") // shown literally, tags and all
	assert.Contains(t, text, bob+"<b>x</b>")
	// Every <b> on the page is an author's name, one per chat line: none
	// came from the message.
	bolds, err := chromedp.Run(tabA, chromedp.Evaluate[int](`document.querySelectorAll("#log b").length`))
	require.NoError(t, err)
	lines, err := chromedp.Run(tabA, chromedp.Evaluate[int](`document.querySelectorAll("#log li:not(.notice)").length`))
	require.NoError(t, err)
	assert.Equal(t, lines, bolds, "a <b> element came from a message")
}

func TestThePageShowsWhyANameIsRefused(t *testing.T) {
	chattest.InProcess(t)
	b := browser(t)
	addr := start(t, defaults)
	taken := join(t, addr, chattest.Name("ana"))
	ctx, cancel := chromedp.NewContext(b)
	defer cancel()
	ctx, cancelTimeout := context.WithTimeout(ctx, 3*chattest.Timeout)
	defer cancelTimeout()
	require.NoError(t, chromedp.Do(ctx,
		chromedp.Navigate("http://"+addr+"/"),
		chromedp.SendKeys("#name", taken.name+"\n"),
	))
	shown, err := chromedp.Run(ctx, chromedp.Poll[string](
		`document.getElementById("error").textContent || false`,
		chromedp.WithPollingTimeout(chattest.Timeout)))
	require.NoError(t, err)
	assert.Equal(t, "name is taken", shown)
}

func TestThePageShowsADroppedConnectionAndReconnects(t *testing.T) {
	chattest.InProcess(t)
	b := browser(t)
	p := chattest.StartProcess(t, "-addr", "127.0.0.1:0")
	url := "http://" + p.Addr + "/"
	name := chattest.Name("ana")
	ctx := tab(t, b, url, name)
	assert.Equal(t, 0, p.Stop(syscall.SIGTERM, writeTimeout+2*time.Second))
	state, err := chromedp.Run(ctx, chromedp.Poll[string](
		`document.getElementById("state").textContent.startsWith("disconnected") &&
		 document.getElementById("state").textContent`,
		chromedp.WithPollingTimeout(chattest.Timeout)))
	require.NoError(t, err)
	assert.Contains(t, state, "retrying")
	logText(t, ctx, "server is shutting down")

	// The server comes back on the same address: the page rejoins by itself.
	chattest.StartProcess(t, "-addr", p.Addr)
	_, err = chromedp.Run(ctx, chromedp.Poll[bool](
		`document.getElementById("state").textContent === "connected"`,
		chromedp.WithPollingTimeout(chattest.Timeout)))
	require.NoError(t, err, "the page did not reconnect")
	logText(t, ctx, "you joined as "+name)
}
