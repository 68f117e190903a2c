package main

import (
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"gochat-steps/internal/chattest"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestMain(m *testing.M) { chattest.Main(m, main) }

// enter connects a client and reads its greeting: from then on it is in the room.
func enter(t *testing.T, addr string) *chattest.Client {
	t.Helper()
	c := chattest.Dial(t, addr)
	c.Expect("You are " + c.Addr())
	return c.Named(c.Addr())
}

// echo is how the server shows a line that client c sent.
func echo(c *chattest.Client) func(string) string {
	return func(text string) string { return c.Addr() + ": " + text }
}

func TestNewcomerIsToldItsAddress(t *testing.T) {
	chattest.Parallel(t)
	addr := chattest.Start(t, serve)
	c := chattest.Dial(t, addr)
	c.Expect("You are " + c.Addr())
}

func TestOthersHearArrivalButNewcomerDoesNot(t *testing.T) {
	chattest.Parallel(t)
	addr := chattest.Start(t, serve)
	ana := enter(t, addr)
	bob := enter(t, addr)
	ana.Expect(bob.Addr() + " has arrived")
	// Bob's next line is his own message, not his own arrival.
	bob.Send("hi")
	bob.Expect(bob.Addr() + ": hi")
}

func TestEveryLineReachesEveryoneSenderIncluded(t *testing.T) {
	chattest.Parallel(t)
	addr := chattest.Start(t, serve)
	ana := enter(t, addr)
	bob := enter(t, addr)
	ana.Expect(bob.Addr() + " has arrived")
	ana.Send("hello", "from ana")
	for _, c := range []*chattest.Client{ana, bob} {
		c.Expect(ana.Addr() + ": hello")
		c.Expect(ana.Addr() + ": from ana")
	}
}

func TestLinesEndingInCRLFAreAccepted(t *testing.T) {
	chattest.Parallel(t)
	addr := chattest.Start(t, serve)
	ana := enter(t, addr)
	ana.Send("telnet says hi\r")
	ana.Expect(ana.Addr() + ": telnet says hi")
}

func TestEveryoneSeesTheSameOrder(t *testing.T) {
	chattest.Parallel(t)
	addr := chattest.Start(t, serve)
	clients := []*chattest.Client{enter(t, addr)}
	for range 2 {
		c := enter(t, addr)
		for _, old := range clients {
			old.Expect(c.Addr() + " has arrived")
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
			sender, n, _ := strings.Cut(line, ": ")
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
	addr := chattest.Start(t, serve)
	talker := enter(t, addr)
	stop := make(chan struct{})
	type talk struct {
		lines []string
		err   error
	}
	talked := make(chan talk, 1)
	go func() {
		lines, err := talker.TalkUntil(stop, 100000, echo(talker))
		talked <- talk{lines, err}
	}()
	newcomer := enter(t, addr)
	first := newcomer.Line("the first line after the greeting")
	close(stop)
	heard := <-talked
	require.NoError(t, heard.err)
	arrival := slices.Index(heard.lines, newcomer.Addr()+" has arrived")
	require.True(t, arrival >= 0 && arrival+1 < len(heard.lines),
		"the talker heard no arrival, or nothing after it; the newcomer heard %q first, the talker ended with %q",
		first, heard.lines[max(0, len(heard.lines)-3):])
	assert.Equal(t, heard.lines[arrival+1], first, "the newcomer missed lines said after its arrival")
}

func TestLeavingIsAnnounced(t *testing.T) {
	for _, tc := range []struct {
		name  string
		leave func(*chattest.Client)
	}{
		{"close", (*chattest.Client).Close},
		{"reset", (*chattest.Client).Reset},
		{"half-close", func(c *chattest.Client) { require.NoError(t, c.Conn().CloseWrite()) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			chattest.Parallel(t)
			addr := chattest.Start(t, serve)
			ana := enter(t, addr)
			bob := enter(t, addr)
			ana.Expect(bob.Addr() + " has arrived")
			tc.leave(bob)
			ana.Expect(bob.Addr() + " has left")
		})
	}
}

func TestHalfClosedClientStillGetsItsLastLines(t *testing.T) {
	chattest.Parallel(t)
	addr := chattest.Start(t, serve)
	ana := enter(t, addr)
	ana.Send("bye")
	require.NoError(t, ana.Conn().CloseWrite())
	ana.Expect(ana.Addr() + ": bye")
	ana.ExpectClosed()
}

func TestPipelinedLinesAreAllDelivered(t *testing.T) {
	chattest.Parallel(t)
	addr := chattest.Start(t, serve)
	c := chattest.Dial(t, addr)
	c.Send("one", "two", "three") // before reading the greeting, in one write
	c.Expect("You are " + c.Addr())
	c.Expect(c.Addr() + ": one")
	c.Expect(c.Addr() + ": two")
	c.Expect(c.Addr() + ": three")
}

func TestHostileTextIsNeutralised(t *testing.T) {
	chattest.Parallel(t)
	addr := chattest.Start(t, serve)
	ana := enter(t, addr)
	bob := enter(t, addr)
	ana.Expect(bob.Addr() + " has arrived")
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
		bob.Send(tc.sent)
		bob.Expect(bob.Addr() + ": " + tc.shown)
		ana.Expect(bob.Addr() + ": " + tc.shown)
	}
}

func TestLongLineGetsAnErrorAndADisconnect(t *testing.T) {
	chattest.Parallel(t)
	addr := chattest.Start(t, serve)
	ana := enter(t, addr)
	bob := enter(t, addr)
	ana.Expect(bob.Addr() + " has arrived")
	bob.Send(strings.Repeat("x", maxLine+1))
	bob.Expect(fmt.Sprintf("line too long (max %d bytes)", maxLine))
	bob.ExpectClosed()
	ana.Expect(bob.Addr() + " has left")
	ana.Send("still here")
	ana.Expect(ana.Addr() + ": still here")
}

func TestLineAtTheLimitIsDelivered(t *testing.T) {
	chattest.Parallel(t)
	addr := chattest.Start(t, serve)
	ana := enter(t, addr)
	text := strings.Repeat("y", maxLine-1) // plus "\n": maxLine bytes
	ana.Send(text)
	ana.Expect(ana.Addr() + ": " + text)
}

// A client that never reads must not stall the room: it is disconnected once
// maxPending bytes wait for it, the others see it leave, and they never miss
// a line.
func TestStuckClientIsDroppedAndTheRoomGoesOn(t *testing.T) {
	chattest.Parallel(t)
	addr := chattest.Start(t, serve)
	stuck := enter(t, addr)
	require.NoError(t, stuck.Conn().SetReadBuffer(4096))
	talker := enter(t, addr)
	listener := enter(t, addr)
	talker.Expect(listener.Addr() + " has arrived")

	text := strings.Repeat("z", 1000)
	left := stuck.Addr() + " has left"
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
				skipped := c.UntilDespite(stuck, talker.Addr()+": "+line)
				switch {
				case len(skipped) == 0:
				case slices.Equal(skipped, []string{left}):
					dropped = true
				default:
					t.Fatalf("%s expected %.60q, got %.200q before it: only %q may come between two of the talker's lines",
						c.Who(), talker.Addr()+": "+line, skipped, left)
				}
			}
		}
	}
	require.True(t, dropped, "the stuck client was never dropped")
	talker.Send("after")
	listener.Expect(talker.Addr() + ": after")
}

// A client that floods as fast as its own echo comes back must not get any
// healthy reader dropped, however long it goes on.
func TestFloodingNeverDropsAHealthyReader(t *testing.T) {
	chattest.Parallel(t)
	addr := chattest.Start(t, serve)
	flooders := []*chattest.Client{enter(t, addr), enter(t, addr)}
	reader := enter(t, addr)
	const n, window = 5000, 200
	err := chattest.Concurrently(len(flooders), func(i int) error {
		return flooders[i].Flood(n, window, fmt.Sprint("f", i), echo(flooders[i]))
	})
	require.NoError(t, err)
	count := map[string]int{}
	for count[flooders[0].Addr()]+count[flooders[1].Addr()] < 2*n {
		line := reader.Line("a flooded line")
		require.NotContains(t, line, " has left", "a client was dropped")
		sender, _, ok := strings.Cut(line, ": ")
		if ok {
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
	addr := chattest.Start(t, serve)
	flooder := enter(t, addr)
	readers := make([]*chattest.Client, 5)
	for i := range readers {
		readers[i] = enter(t, addr)
	}
	const lines, most = 200000, 5000
	flooded := make(chan error, 1)
	go func() { flooded <- flooder.TrySend(strings.Repeat("\n", lines-1)) }()
	discarded := make(chan error, 1) // the flooder reads at full speed too
	go func() { _, err := io.Copy(io.Discard, flooder.Conn()); discarded <- err }()
	seen := make([]int, len(readers)) // the flooder's lines each reader got in a second
	err := chattest.Concurrently(len(readers), func(i int) (err error) {
		seen[i], err = readers[i].ReadThroughFlood(echo(flooder)(""), lines, time.Second,
			"still here", echo(readers[i])("still here"))
		return err
	})
	assert.NoError(t, err, "a reader was dropped, or starved, during the flood")
	for i, n := range seen {
		assert.LessOrEqual(t, n, most, "%s got %d of the flooder's lines in one second: "+
			"the flood was not slowed (the reference server lets about 2,000 through)", readers[i].Addr(), n)
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
	addr := chattest.Start(t, serve)
	const n = 1000
	observer := enter(t, addr)
	clients := make([]*chattest.Client, n)
	require.NoError(t, chattest.ConcurrentlyAtMost(n, chattest.AtOnce, func(i int) error {
		c, err := chattest.TryDial(t, addr)
		if err != nil {
			return fmt.Errorf("client %d: %w", i, err)
		}
		clients[i] = c
		if _, err := c.TryUntil("You are " + c.Addr()); err != nil {
			return fmt.Errorf("client %d (%s), joining: %w", i, c.Addr(), err)
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
		if _, err := clients[i].TryUntil(observer.Addr() + ": welcome, all"); err != nil {
			return fmt.Errorf("client %d (%s), waiting for the welcome: %w", i, clients[i].Addr(), err)
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
		if who, ok := strings.CutSuffix(line, " has left"); ok {
			assert.False(t, left[who], "%s left twice", who)
			left[who] = true
		}
	}
}

// The broadcaster plus a reader and a writer per client: 2n+2 goroutines
// with n clients, counting serve's own.
func TestTwoGoroutinesPerClient(t *testing.T) {
	chattest.InProcess(t)
	base := chattest.Baseline(t)
	addr := chattest.Start(t, serve)
	chattest.WaitGoroutines(t, base+2, "serve and the broadcaster")
	const n = 20
	var clients []*chattest.Client
	for range n {
		clients = append(clients, enter(t, addr))
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
	addr := chattest.StartOn(t, &flakyListener{Listener: ln, failures: 3}, serve)
	enter(t, addr)
}

// The program logs where it listens, so that whoever started it knows
// where to connect.
func TestProgramLogsWhereItListens(t *testing.T) {
	chattest.Parallel(t)
	chattest.StartProcess(t, "-addr", "127.0.0.1:0").ExpectListening()
}

func TestProgramStopsCleanlyOnSIGTERM(t *testing.T) {
	chattest.Parallel(t)
	p := chattest.StartProcess(t, "-addr", "127.0.0.1:0")
	ana := enter(t, p.Addr)
	ana.Send("hi")
	ana.Expect(ana.Addr() + ": hi")
	assert.Equal(t, 0, p.Stop(syscall.SIGTERM, 5*time.Second))
	ana.ExpectClosed()
}

func TestSanitizeKeepsPrintableTextAndReplacesTheRest(t *testing.T) {
	chattest.OwnCode(t)
	for in, want := range map[string]string{
		"":                         "",
		"plain text":               "plain text",
		"tab\there":                "tab\uFFFDhere",
		"nul\x00":                  "nul\uFFFD",
		"\xc3":                     "\uFFFD",
		"ok \u2603 \u00e9":         "ok \u2603 \u00e9",
		"\x1bc reset":              "\uFFFDc reset",
		"\u0085next line":          "\uFFFDnext line",
		"del\x7f":                  "del\uFFFD",
		"\U0001F600 emoji":         "\U0001F600 emoji",
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
