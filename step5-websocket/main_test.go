package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"gochat-steps/internal/chattest"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/net/websocket"
)

func TestMain(m *testing.M) { chattest.Main(m, main) }

// options are the server's settings, as its flags give them.
type options struct {
	idle     time.Duration
	history  int
	origin   string
	maxConns int
}

var defaults = options{idle: 5 * time.Minute, history: 100, maxConns: 2000}

// start runs a server with opts for the test: in this process, or the
// student's program with the same settings as flags (classroom mode).
func start(t *testing.T, opts options) string {
	t.Helper()
	serveOpts := func(ctx context.Context, ln net.Listener) error {
		return serve(ctx, ln, opts.idle, opts.history, opts.origin, opts.maxConns)
	}
	if opts == defaults {
		return chattest.Start(t, serveOpts)
	}
	var flags []string
	if opts.idle != defaults.idle {
		flags = append(flags, "-idle", opts.idle.String())
	}
	if opts.history != defaults.history {
		flags = append(flags, "-history", fmt.Sprint(opts.history))
	}
	if opts.origin != defaults.origin {
		flags = append(flags, "-origin", opts.origin)
	}
	if opts.maxConns != defaults.maxConns {
		flags = append(flags, "-maxconns", fmt.Sprint(opts.maxConns))
	}
	return chattest.StartWith(t, serveOpts, flags...)
}

// wsClient is one test WebSocket connection, as a browser on the page would open it.
type wsClient struct {
	t      testing.TB
	ws     *websocket.Conn
	name   string
	frames int       // how many frames it has received
	queue  []message // received, not yet read: a frame holds several
}

func tryDial(t testing.TB, addr, origin string) (*wsClient, error) {
	cfg, err := websocket.NewConfig("ws://"+addr+"/ws", origin)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), chattest.Timeout)
	defer cancel()
	ws, err := cfg.DialContext(ctx)
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { ws.Close() })
	return &wsClient{t: t, ws: ws}, nil
}

func dial(t *testing.T, addr string) *wsClient {
	t.Helper()
	c, err := tryDial(t, addr, "http://"+addr)
	require.NoError(t, err)
	return c
}

// join connects a client called name and reads its welcome.
func join(t *testing.T, addr, name string) *wsClient {
	t.Helper()
	c := dial(t, addr)
	c.name = name
	c.send(name)
	c.expect(message{Event: "welcome", Body: name})
	return c
}

func (c *wsClient) send(body string) {
	c.t.Helper()
	require.NoError(c.t, websocket.JSON.Send(c.ws, message{Body: body}))
}

func (c *wsClient) sendRaw(frame string) {
	c.t.Helper()
	require.NoError(c.t, websocket.Message.Send(c.ws, frame))
}

// tryNext returns the next message, waiting at most chattest.Timeout for
// a frame if none is left from the last one. Every frame from the server
// must be a JSON array of messages. With CHAT_ADDR it skips the arrivals,
// departures and messages of clients this test did not create: the shared
// server's history holds earlier tests' messages, and it may still be
// catching up with what their clients did (see also
// chattest.Client.ReadLine).
func (c *wsClient) tryNext() (message, error) {
	for {
		for len(c.queue) == 0 {
			if err := c.ws.SetReadDeadline(time.Now().Add(chattest.Timeout)); err != nil {
				return message{}, err
			}
			var frame string
			if err := websocket.Message.Receive(c.ws, &frame); err != nil {
				return message{}, err
			}
			c.frames++
			if err := json.Unmarshal([]byte(frame), &c.queue); err != nil || len(c.queue) == 0 {
				return message{}, fmt.Errorf("a frame that is not a JSON array of messages: %q", frame)
			}
		}
		m := c.queue[0]
		c.queue = c.queue[1:]
		stranger := (m.Event == "left" || m.Event == "arrived") && !chattest.KnownPeer(m.Body) ||
			m.Event == "" && !chattest.KnownPeer(m.Author)
		if stranger && chattest.ClassroomAddr() != "" {
			continue
		}
		return m, nil
	}
}

func (c *wsClient) next(waitingFor string) message {
	c.t.Helper()
	m, err := c.tryNext()
	if err != nil {
		c.t.Fatalf("%s expected %s, got %v", c.name, waitingFor, err)
	}
	return m
}

// nextDespite is next in a test where the client called stuck reads
// nothing: if no message comes within chattest.Timeout, the failure says
// that a client that reads nothing blocked everyone.
func (c *wsClient) nextDespite(stuck string, want message) message {
	c.t.Helper()
	m, err := c.tryNext()
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		c.t.Fatalf("%s waited %v for %+v, which never came, while %s read nothing: "+
			"a client that reads nothing blocked everyone (a server must never wait for one client: "+
			"see \"Slow and stuck clients\" in docs/protocol.md)", c.name, chattest.Timeout, want, stuck)
	case err != nil:
		c.t.Fatalf("%s expected %+v, got %v", c.name, want, err)
	}
	return m
}

func (c *wsClient) expect(want message) {
	c.t.Helper()
	got := c.next(fmt.Sprintf("%+v", want))
	require.Equal(c.t, want, got.as(want), "%s got an unexpected frame", c.name)
}

func (c *wsClient) tryUntil(want message) error {
	for {
		m, err := c.tryNext()
		if err != nil {
			return fmt.Errorf("%s expected %+v, got %w", c.name, want, err)
		}
		if m.is(want) {
			return nil
		}
	}
}

// as is m without what want leaves out: the time every message carries
// (TestEveryMessageCarriesTheServersTime checks it), and the list of who
// is here in a welcome (TestTheWelcomeSaysWhoIsHere).
func (m message) as(want message) message {
	if want.Time == "" {
		m.Time = ""
	}
	if want.Here == nil {
		m.Here = nil
	}
	return m
}

// bare is ms without their times and lists of who is here (see as).
func bare(ms []message) []message {
	out := make([]message, len(ms))
	for i, m := range ms {
		out[i] = m.as(message{})
	}
	return out
}

// is reports whether m is want, apart from what want leaves out (see as).
func (m message) is(want message) bool { return reflect.DeepEqual(m.as(want), want) }

func (c *wsClient) expectClosed() {
	c.t.Helper()
	m, err := c.tryNext()
	require.Error(c.t, err, "%s expected the server to close the connection, got %+v", c.name, m)
	require.NotErrorIs(c.t, err, os.ErrDeadlineExceeded, "%s: the connection is still open", c.name)
}

func says(name, body string) message { return message{Author: name, Body: body} }

// The page, and the scripts and style sheets it loads, all come from the
// server itself: nothing from elsewhere (a CDN, another site).
func TestThePageIsServedAndSelfContained(t *testing.T) {
	chattest.Parallel(t)
	addr := start(t, defaults)
	get := func(path string) (string, *http.Response) {
		t.Helper()
		resp, err := http.Get("http://" + addr + path)
		require.NoError(t, err)
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return string(body), resp
	}
	page, resp := get("/")
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, "text/html; charset=utf-8", resp.Header.Get("Content-Type"))
	everything := page
	for _, ref := range regexp.MustCompile(`(?:src|href)="([^"]*)"`).FindAllStringSubmatch(page, -1) {
		if !assert.NotRegexp(t, `^([a-z]+:|//)`, ref[1], "the page loads something from elsewhere") {
			continue
		}
		body, resp := get("/" + strings.TrimPrefix(ref[1], "/"))
		assert.Equal(t, http.StatusOK, resp.StatusCode, "the page loads %s", ref[1])
		everything += body
	}
	assert.Contains(t, everything, "new WebSocket(", "the page, or a script it loads, opens the WebSocket")

	_, resp = get("/nothing-here")
	assert.Equal(t, http.StatusNotFound, resp.StatusCode)
}

func TestOthersSeeArrivalsAndEveryMessageReachesEveryone(t *testing.T) {
	chattest.Parallel(t)
	addr := start(t, defaults)
	ana, bob := chattest.Name("ana"), chattest.Name("bob")
	a := join(t, addr, ana)
	b := join(t, addr, bob)
	a.expect(message{Event: "arrived", Body: bob})
	b.send("hi")
	b.expect(says(bob, "hi")) // and not its own arrival first
	a.expect(says(bob, "hi"))
}

// gopl's exercise 8.12: a newcomer is told who is in the room. Its
// welcome lists the others, never itself; arrivals and departures keep a
// page's list current from then on.
func TestTheWelcomeSaysWhoIsHere(t *testing.T) {
	chattest.Parallel(t)
	addr := start(t, defaults)
	ana, bob, cat, dan := chattest.Name("ana"), chattest.Name("bob"), chattest.Name("cat"), chattest.Name("dan")
	ours := []string{ana, bob, cat, dan}
	// here is who c's welcome says is in the room, in any order, leaving out
	// (in classroom mode) the clients of earlier tests not gone yet.
	here := func(c *wsClient) []string {
		welcome := c.next("its welcome")
		require.Equal(t, message{Event: "welcome", Body: c.name}, welcome.as(message{}), "%s got an unexpected frame", c.name)
		var names []string
		for _, name := range welcome.Here {
			if slices.Contains(ours, name) {
				names = append(names, name)
			}
		}
		slices.Sort(names)
		return names
	}
	enter := func(name string) *wsClient {
		c := dial(t, addr)
		c.name = name
		c.send(name)
		return c
	}
	a := enter(ana)
	assert.Empty(t, here(a), "%s came into an empty room; its welcome should list nobody", ana)
	b := enter(bob)
	assert.Equal(t, []string{ana}, here(b), "%s came in after %s", bob, ana)
	c := enter(cat)
	assert.Equal(t, []string{ana, bob}, here(c), "%s came in after %s and %s", cat, ana, bob)
	b.send("/quit")
	c.expect(message{Event: "left", Body: bob})
	d := enter(dan)
	assert.Equal(t, []string{ana, cat}, here(d), "%s came in after %s, %s and %s, and %s had left", dan, ana, bob, cat, bob)
}

// Every message carries the server's time, in RFC 3339, as the server
// encoded it: a message in a newcomer's history keeps the time it was
// said at.
func TestEveryMessageCarriesTheServersTime(t *testing.T) {
	chattest.Parallel(t)
	addr := start(t, defaults)
	before := time.Now()
	ana, bob := chattest.Name("ana"), chattest.Name("bob")
	a := dial(t, addr)
	a.name = ana
	a.send(ana)
	welcomeAna := a.next("its welcome")
	a.send("what time is it?")
	said := a.next("its own message")
	b := dial(t, addr)
	b.name = bob
	b.send(bob)
	welcomeBob, history, arrived := b.next("its welcome"), b.next("the history"), a.next(bob+"'s arrival")
	after := time.Now()
	for _, tc := range []struct{ got, want message }{
		{welcomeAna, message{Event: "welcome", Body: ana}},
		{said, says(ana, "what time is it?")},
		{welcomeBob, message{Event: "welcome", Body: bob}},
		{history, says(ana, "what time is it?")},
		{arrived, message{Event: "arrived", Body: bob}},
	} {
		require.Equal(t, tc.want, tc.got.as(tc.want), "an unexpected frame")
		at, err := time.Parse(time.RFC3339, tc.got.Time)
		require.NoError(t, err, "%+v: its time should be RFC 3339, such as %q", tc.got, before.UTC().Format(time.RFC3339))
		// The server's clock is this machine's; its time has whole seconds.
		assert.WithinRange(t, at, before.Add(-time.Second), after.Add(time.Second),
			"%+v: its time should be when the server sent it, between %s and %s by the tests' clock",
			tc.got, before.Format(time.RFC3339), after.Format(time.RFC3339))
	}
	assert.Equal(t, said.Time, history.Time, "%s's history should give %s's message the time it was said at", bob, ana)
}

func TestTheServerSetsTheAuthor(t *testing.T) {
	chattest.Parallel(t)
	addr := start(t, defaults)
	ana := chattest.Name("ana")
	a := join(t, addr, ana)
	a.sendRaw(`{"author": "mallory", "body": "trust me", "event": "welcome"}`)
	a.expect(says(ana, "trust me"))
}

func TestBadAndTakenNamesAreRefusedWithAReason(t *testing.T) {
	chattest.Parallel(t)
	addr := start(t, defaults)
	taken := chattest.Name("ana")
	join(t, addr, taken)
	c := dial(t, addr)
	for _, tc := range []struct{ sent, reason string }{
		{"   ", "name is empty"},
		{strings.Repeat("n", 21), "name is too long (max 20 characters)"},
		{"<b>x</b>", `name has a character that is not allowed: '<' (use letters, digits, _ or -)`},
		{taken, "name is taken"},
	} {
		c.send(tc.sent)
		c.expect(message{Event: "refused", Body: tc.reason})
	}
	name := chattest.Name("zoë")
	c.send(strings.ToUpper(name))
	c.expect(message{Event: "welcome", Body: name}) // names are shown in lower case
}

// A name that looks like one in the room must be refused, or become that
// name and be found taken (the TCP steps test more cases; the rules are
// the same).
func TestLookAlikeNamesAreRefusedOrFoundTaken(t *testing.T) {
	chattest.Parallel(t)
	addr := start(t, defaults)
	alice, jose := chattest.Name("alice"), chattest.Name("jos\u00e9") // é as one character
	join(t, addr, alice)
	join(t, addr, jose)
	notAllowed := func(c string) string {
		return "name has a character that is not allowed: " + c + " (use letters, digits, _ or -)"
	}
	for _, tc := range []struct{ what, sent, imitates, reason string }{
		{"a variation selector after it", alice + "\uFE0F", alice, notAllowed(`'\ufe0f'`)},
		{"a combining grapheme joiner inside", alice[:3] + "\u034F" + alice[3:], alice, notAllowed(`'\u034f'`)},
		{"é written apart (NFD)", "jose\u0301" + jose[len("jos\u00e9"):], jose, "name is taken"},
		{"fullwidth letters", fullwidth(alice), alice, "name is taken"},
		{"capitals", strings.ToUpper(alice), alice, "name is taken"},
		{"a Cyrillic а", "\u0430" + alice[1:], alice, "name mixes scripts: Cyrillic, Latin"},
		{"the Hangul filler, invisible", "\u3164", "an empty name", notAllowed(`'\u3164'`)},
		{"Z with 19 stacked marks", "Z" + stacked(19), "an unreadable smudge", "name has more than 4 marks on one character"},
	} {
		t.Run(tc.what, func(t *testing.T) {
			c := dial(t, addr)
			c.send(tc.sent)
			got := c.next("a refusal")
			assert.Equal(t, message{Event: "refused", Body: tc.reason}, got.as(message{}),
				"sent %+q as a name, which looks like %s", tc.sent, tc.imitates)
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

func TestNewcomersGetTheRecentHistoryFirst(t *testing.T) {
	chattest.Parallel(t)
	addr := start(t, options{idle: defaults.idle, history: 3, maxConns: defaults.maxConns})
	ana := chattest.Name("ana")
	a := join(t, addr, ana)
	for i := range 5 {
		a.send(fmt.Sprint("m", i))
		a.expect(says(ana, fmt.Sprint("m", i)))
	}
	bob := chattest.Name("bob")
	b := join(t, addr, bob)
	for _, m := range []string{"m2", "m3", "m4"} { // the last three, oldest first
		b.expect(says(ana, m))
	}
	a.send("live")
	b.expect(says(ana, "live"))
}

func TestBadFramesAreRefusedAndLeaveNoTrace(t *testing.T) {
	for _, tc := range []struct{ name, frame, reason string }{
		{"not JSON", "hello", `frame is not JSON of the form {"body": "..."}`},
		{"body not a string", `{"body": 42}`, `frame is not JSON of the form {"body": "..."}`},
		{"no body", `{"text": "hi"}`, "body is missing or empty"},
		{"empty body", `{"body": ""}`, "body is missing or empty"},
		{"body too long", `{"body": "` + strings.Repeat("é", maxBody+1) + `"}`, "body is too long (max 1000 characters)"},
		{"frame too large", `{"body": "` + strings.Repeat("x", maxFrame) + `"}`, "frame too large (max 8192 bytes)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			chattest.Parallel(t)
			addr := start(t, defaults)
			ana, bob := chattest.Name("ana"), chattest.Name("bob")
			a := join(t, addr, ana)
			a.send("before")
			a.expect(says(ana, "before"))
			b := join(t, addr, bob)
			a.expect(message{Event: "arrived", Body: bob})
			b.expect(says(ana, "before")) // history
			b.sendRaw(tc.frame)
			b.expect(message{Event: "bye", Body: tc.reason})
			b.expectClosed()
			a.expect(message{Event: "left", Body: bob})
			// The room goes on, and its history holds only the good message.
			c := join(t, addr, chattest.Name("cat"))
			c.expect(says(ana, "before"))
			a.send("after")
			c.expect(says(ana, "after"))
		})
	}
}

func TestHandshakesFromOtherSitesAreRefused(t *testing.T) {
	chattest.Parallel(t)
	opts := defaults
	opts.origin = "https://allowed.example"
	if chattest.ClassroomAddr() != "" {
		opts = defaults // the running server has the -origin it has
	}
	addr := start(t, opts)
	for _, tc := range []struct {
		origin string
		status int
	}{
		{"http://evil.example", http.StatusForbidden},
		{"http://" + addr + ".evil.example", http.StatusForbidden},
		{"null", http.StatusForbidden},
		{"http://" + addr, http.StatusSwitchingProtocols},
		{"https://allowed.example", http.StatusSwitchingProtocols}, // -origin: in-process only
		{"", http.StatusSwitchingProtocols},                        // not a browser
	} {
		if tc.origin == "https://allowed.example" && opts.origin != tc.origin {
			continue // CHAT_ADDR: the server under test was not started with this -origin
		}
		req, err := http.NewRequest("GET", "http://"+addr+"/ws", nil)
		require.NoError(t, err)
		req.Header.Set("Connection", "Upgrade")
		req.Header.Set("Upgrade", "websocket")
		req.Header.Set("Sec-WebSocket-Version", "13")
		req.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
		if tc.origin != "" {
			req.Header.Set("Origin", tc.origin)
		}
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		assert.Equal(t, tc.status, resp.StatusCode, "Origin %q", tc.origin)
	}
}

func TestHTMLIsPassedOnAsText(t *testing.T) {
	chattest.Parallel(t)
	addr := start(t, defaults)
	ana := chattest.Name("ana")
	a := join(t, addr, ana)
	a.send(`<b>x</b><script>alert(1)</script> & "quotes"`)
	a.expect(says(ana, `<b>x</b><script>alert(1)</script> & "quotes"`))
	a.send("\x1b[31m \xff") // the same control-character rules as the TCP steps
	a.expect(says(ana, "\uFFFD[31m \uFFFD"))
}

// Bidi controls would reorder what the page shows, and invisible characters
// hide text: they arrive as U+FFFD. Emoji sequences arrive whole.
func TestBidiAndInvisibleCharactersAreNeutralised(t *testing.T) {
	chattest.Parallel(t)
	addr := start(t, defaults)
	ana := chattest.Name("ana")
	a := join(t, addr, ana)
	for _, tc := range []struct{ what, sent, shown string }{
		{"right-to-left override", "x\u202Eevil.exe\u202C is \u202Efdp.txt", "x\uFFFDevil.exe\uFFFD is \uFFFDfdp.txt"},
		{"bidi isolates and marks", "\u2067a\u2069 \u200Eb\u200F \u061Cc", "\uFFFDa\uFFFD \uFFFDb\uFFFD \uFFFDc"},
		{"invisible format characters", "zero\u200Bwidth \uFEFFbom", "zero\uFFFDwidth \uFFFDbom"},
		{"line and paragraph separators", "one\u2028two\u2029three", "one\uFFFDtwo\uFFFDthree"},
		{"emoji sequences", "👩\u200D👩\u200D👧 ❤\uFE0F 👍🏽 🇫🇷 1\uFE0F\u20E3", "👩\u200D👩\u200D👧 ❤\uFE0F 👍🏽 🇫🇷 1\uFE0F\u20E3"},
	} {
		a.send(tc.sent)
		got := a.next(tc.what)
		assert.Equal(t, says(ana, tc.shown), got.as(message{}), "%s: sent %+q, expected %+q", tc.what, tc.sent, tc.shown)
	}
}

func TestQuitLeavesTheRoom(t *testing.T) {
	chattest.Parallel(t)
	addr := start(t, defaults)
	ana, bob := chattest.Name("ana"), chattest.Name("bob")
	a := join(t, addr, ana)
	b := join(t, addr, bob)
	a.expect(message{Event: "arrived", Body: bob})
	b.send("/quit")
	b.expectClosed()
	a.expect(message{Event: "left", Body: bob})
}

// A client that never reads must not stall the room: it is dropped, the
// others see it leave, and they miss nothing.
func TestAStuckClientIsDroppedAndTheRoomGoesOn(t *testing.T) {
	chattest.Parallel(t)
	addr := start(t, defaults)
	stuckName, talker, listener := chattest.Name("stuck"), chattest.Name("talker"), chattest.Name("listener")
	stuck := join(t, addr, stuckName)
	tc := join(t, addr, talker)
	l := join(t, addr, listener)
	tc.expect(message{Event: "arrived", Body: listener})
	_ = stuck // never reads again

	text := strings.Repeat("z", 900)
	left := message{Event: "left", Body: stuckName}
	dropped := false
	for i := 0; i < 30000 && !dropped; i += 50 { // at most 27 MB
		for j := range 50 {
			tc.send(fmt.Sprint(i+j, text))
		}
		for j := range 50 {
			want := says(talker, fmt.Sprint(i+j, text))
			for _, c := range []*wsClient{tc, l} {
				m := c.nextDespite(stuckName, want)
				if m.is(left) {
					dropped = true
					m = c.nextDespite(stuckName, want)
				}
				require.Equal(t, want, m.as(want), "%s expected the talker's line %d; only %s's departure may come between two of them", c.name, i+j, stuckName)
			}
		}
	}
	require.True(t, dropped, "the stuck client was never dropped")
}

// One client floods the room with 200,000 messages, as fast as TCP takes
// them, while five others read at full speed. Its messages are slowed to
// its rate (in a second, no reader gets more than 5,000 of them), and no
// reader loses its seat: each still hears its own next message.
func TestAFloodIsSlowedAndNoReaderIsDropped(t *testing.T) {
	chattest.Parallel(t)
	// Not on a shared server (CHAT_ADDR): the flooder's backlog, already in
	// the server's socket, would reach the room for minutes after this test.
	chattest.Own(t, "its flood would reach the tests after it")
	addr := start(t, defaults)
	flooderName := chattest.Name("flooder")
	flooder := joinRaw(t, addr, flooderName)
	readers := make([]*wsClient, 5)
	for i := range readers {
		readers[i] = join(t, addr, chattest.Name("reader"))
	}
	const messages, most = 200000, 5000
	flooded := make(chan error, 1)
	go func() { _, err := flooder.conn.Write(bytes.Repeat(masked(`{"body": "x"}`), messages)); flooded <- err }()
	discarded := make(chan error, 1) // the flooder reads at full speed too
	go func() { _, err := io.Copy(io.Discard, flooder.in); discarded <- err }()
	seen := make([]int, len(readers)) // the flooder's messages each reader got in a second
	err := chattest.Concurrently(len(readers), func(i int) error {
		c := readers[i]
		for end := time.Now().Add(time.Second); seen[i] < messages && time.Now().Before(end); {
			m, err := c.tryNext()
			if err != nil {
				return fmt.Errorf("%s, after %d messages of the flood: %w", c.name, seen[i], err)
			}
			if m.is(says(flooderName, "x")) {
				seen[i]++
			}
		}
		if err := websocket.JSON.Send(c.ws, message{Body: "still here"}); err != nil {
			return err
		}
		return c.tryUntil(says(c.name, "still here"))
	})
	assert.NoError(t, err, "a reader was dropped, or starved, during the flood")
	for i, n := range seen {
		assert.LessOrEqual(t, n, most, "%s got %d of the flooder's messages in one second: "+
			"the flood was not slowed (the reference server lets about 2,000 through)", readers[i].name, n)
	}
	flooder.conn.Close()
	<-flooded // a write error is expected: the flooder was closed mid-flood
	<-discarded
}

// masked is a client's text frame carrying payload (under 126 bytes).
func masked(payload string) []byte {
	mask := []byte{1, 2, 3, 4}
	f := append([]byte{0x81, 0x80 | byte(len(payload))}, mask...)
	for i := range len(payload) {
		f = append(f, payload[i]^mask[i%4])
	}
	return f
}

// Five hundred clients in the room at once: each gets the history, all
// hear ten of them talk, and all leave. They join and catch up
// chattest.AtOnce at a time, so that no one wait has to outlast the whole
// room's work.
func TestFiveHundredClientsJoinChatAndLeave(t *testing.T) {
	// Not parallel: the other tests' waits need not allow for its load.
	if testing.Short() {
		t.Skip("slow: -short")
	}
	addr := start(t, defaults)
	const n = 500
	first := join(t, addr, chattest.Name("first"))
	first.send("history")
	first.expect(says(first.name, "history"))
	clients := make([]*wsClient, n)
	require.NoError(t, chattest.ConcurrentlyAtMost(n, chattest.AtOnce, func(i int) error {
		c, err := tryDial(t, addr, "http://"+addr)
		if err != nil {
			return fmt.Errorf("client %d, handshake: %w", i, err)
		}
		c.name = chattest.Name("c")
		clients[i] = c
		if err := websocket.JSON.Send(c.ws, message{Body: c.name}); err != nil {
			return fmt.Errorf("client %d (%s), sending its name: %w", i, c.name, err)
		}
		if err := c.tryUntil(message{Event: "welcome", Body: c.name}); err != nil {
			return fmt.Errorf("client %d, joining: %w", i, err)
		}
		if err := c.tryUntil(says(first.name, "history")); err != nil {
			return fmt.Errorf("client %d, reading the history: %w", i, err)
		}
		return nil
	}))
	// Ten of them talk; everyone hears all ten.
	for _, c := range clients[:10] {
		require.NoError(t, websocket.JSON.Send(c.ws, message{Body: "hello"}))
	}
	require.NoError(t, chattest.ConcurrentlyAtMost(n, chattest.AtOnce, func(i int) error {
		heard := map[string]bool{}
		for len(heard) < 10 { // from ten connections: in any order
			m, err := clients[i].tryNext()
			if err != nil {
				return fmt.Errorf("client %d (%s) heard %d of 10 hellos, then %w", i, clients[i].name, len(heard), err)
			}
			if m.Body == "hello" {
				heard[m.Author] = true
			}
		}
		return nil
	}))
	for _, c := range clients {
		c.ws.Close()
	}
	left := 0
	for left < n {
		if m := first.next(fmt.Sprintf("departure %d of %d", left+1, n)); m.Event == "left" {
			left++
		}
	}
	late := join(t, addr, chattest.Name("late"))
	late.expect(says(first.name, "history")) // history intact
}

// Per client: net/http's goroutine for the request, which runs handleConn,
// and the writer. Plus serve, which runs net/http's accept loop, and the
// broadcaster.
func TestTwoGoroutinesPerClient(t *testing.T) {
	chattest.InProcess(t)
	base := chattest.Baseline(t)
	addr := start(t, defaults)
	chattest.WaitGoroutines(t, base+2, "serve and the broadcaster")
	const n = 20
	var clients []*wsClient
	for range n {
		clients = append(clients, join(t, addr, chattest.Name("c")))
	}
	chattest.WaitGoroutines(t, base+2+2*n, fmt.Sprintf("%d clients", n))
	for _, c := range clients {
		c.ws.Close()
	}
	chattest.WaitGoroutines(t, base+2, "all clients gone")
}

// The program logs where it listens, so that whoever started it knows
// where to connect.
func TestProgramLogsWhereItListens(t *testing.T) {
	chattest.Parallel(t)
	chattest.StartProcess(t, "-addr", "127.0.0.1:0").ExpectListening()
}

func TestProgramSaysGoodbyeAndStopsOnSIGTERM(t *testing.T) {
	chattest.Parallel(t)
	p := chattest.StartProcess(t, "-addr", "127.0.0.1:0")
	a := join(t, p.Addr, chattest.Name("ana"))
	assert.Equal(t, 0, p.Stop(syscall.SIGTERM, writeTimeout+2*time.Second))
	a.expect(message{Event: "bye", Body: "server is shutting down"})
	a.expectClosed()
}
