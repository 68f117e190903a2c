package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"reflect"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"gochat-steps/internal/chattest"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/net/websocket"
)

// TestMain: in classroom mode for a cluster, CHAT_ADDRS lists its servers
// (host:port,host:port,host:port), and the first one is CHAT_ADDR, for the
// tests of one server.
func TestMain(m *testing.M) {
	if list := os.Getenv("CHAT_ADDRS"); list != "" && chattest.ClassroomAddr() == "" {
		first, _, _ := strings.Cut(list, ",")
		os.Setenv("CHAT_ADDR", first)
	}
	chattest.Main(m, main)
}

// options are the server's settings, as its flags give them.
type options struct {
	idle     time.Duration
	history  int
	origin   string
	maxConns int
}

var defaults = options{idle: 5 * time.Minute, history: 100, maxConns: 2000}

// start runs a server with opts for the test, alone with its own NATS
// inside (or uses CHAT_ADDR).
func start(t *testing.T, opts options) string {
	t.Helper()
	return chattest.Start(t, func(ctx context.Context, ln net.Listener) error {
		ns, stop, err := embedNATS("", t.TempDir())
		if err != nil {
			return err
		}
		defer stop()
		nc, err := nats.Connect("", nats.InProcessServer(ns), nats.NoReconnect())
		if err != nil {
			return err
		}
		defer nc.Close()
		return serve(ctx, ln, opts.idle, opts.history, opts.origin, opts.maxConns, nc)
	})
}

// startNATS starts a NATS server with JetStream in the test process, which
// keeps its stream in store, until the test ends.
func startNATS(t testing.TB, store string) *server.Server {
	t.Helper()
	ns, stop, err := embedNATS("", store)
	require.NoError(t, err)
	t.Cleanup(stop)
	return ns
}

// server is one chat server of a cluster in the test process.
type server6 struct {
	addr   string
	nc     *nats.Conn         // its connection to NATS
	cancel context.CancelFunc // stops it
	done   chan error         // what serve returned
}

// startServer runs a chat server with opts that joins the NATS ns, until
// the test ends, or until it is stopped with stop.
func startServer(t testing.TB, ns *server.Server, opts options) *server6 {
	t.Helper()
	chattest.InProcess(t)
	nc, err := nats.Connect("", nats.InProcessServer(ns), nats.NoReconnect())
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	s := &server6{addr: ln.Addr().String(), nc: nc, cancel: cancel, done: make(chan error, 1)}
	go func() { s.done <- serve(ctx, ln, opts.idle, opts.history, opts.origin, opts.maxConns, nc) }()
	t.Cleanup(func() { s.stop(t) })
	return s
}

// stop cancels the server and returns what serve returned.
func (s *server6) stop(t testing.TB) error {
	t.Helper()
	s.cancel()
	select {
	case err := <-s.done:
		s.done <- err // for the next call
		return err
	case <-time.After(chattest.Timeout):
		t.Fatalf("serve did not return within %v of being cancelled", chattest.Timeout)
		return nil
	}
}

// clusterAddrs returns the addresses of n servers that share one room: in
// classroom mode, the first n of CHAT_ADDRS (the test is skipped if there
// are fewer); otherwise n servers started in the test process, on one NATS.
func clusterAddrs(t *testing.T, n int) []string {
	t.Helper()
	if chattest.ClassroomAddr() != "" {
		addrs := strings.Split(os.Getenv("CHAT_ADDRS"), ",")
		if len(addrs) < n || addrs[0] == "" {
			t.Skipf("classroom mode: this test needs CHAT_ADDRS, the addresses of %d servers sharing one room", n)
		}
		chattest.Start(t, nil) // a new test: forget the clients of earlier ones
		return addrs[:n]
	}
	_, s := startCluster(t, n, defaults)
	var addrs []string
	for _, srv := range s {
		addrs = append(addrs, srv.addr)
	}
	return addrs
}

// startCluster starts NATS and n chat servers that share its room.
func startCluster(t testing.TB, n int, opts options) (*server.Server, []*server6) {
	t.Helper()
	chattest.InProcess(t)
	ns := startNATS(t, t.TempDir())
	var servers []*server6
	for range n {
		servers = append(servers, startServer(t, ns, opts))
	}
	return ns, servers
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

// tryNext returns the next message, waiting at most chattest.Timeout for
// a frame if none is left from the last one. Every frame from the server
// must be a JSON array of messages. In classroom mode it skips the
// departures and messages of clients this test did not create: the shared
// server's history holds earlier tests' messages (see also
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

// is reports whether m is want, apart from what want leaves out (see as).
func (m message) is(want message) bool { return reflect.DeepEqual(m.as(want), want) }

func (c *wsClient) expectClosed() {
	c.t.Helper()
	m, err := c.tryNext()
	require.Error(c.t, err, "%s expected the server to close the connection, got %+v", c.name, m)
	require.NotErrorIs(c.t, err, os.ErrDeadlineExceeded, "%s: the connection is still open", c.name)
}

func says(name, body string) message { return message{Author: name, Body: body} }

func TestAloneItChatsAsStep5Does(t *testing.T) {
	chattest.Parallel(t)
	addr := start(t, defaults)
	ana, bob := chattest.Name("ana"), chattest.Name("bob")
	a := join(t, addr, ana)
	b := join(t, addr, bob)
	a.expect(message{Event: "arrived", Body: bob})
	b.send("hi")
	b.expect(says(bob, "hi")) // and not its own arrival first
	a.expect(says(bob, "hi"))
	b.send("/quit")
	b.expectClosed()
	a.expect(message{Event: "left", Body: bob})
}

func TestArrivalsMessagesAndDeparturesReachEveryServer(t *testing.T) {
	chattest.Parallel(t)
	s := clusterAddrs(t, 3)
	ana, bob, cy := chattest.Name("ana"), chattest.Name("bob"), chattest.Name("cy")
	a := join(t, s[0], ana)
	b := join(t, s[1], bob)
	a.expect(message{Event: "arrived", Body: bob})
	c := dial(t, s[2])
	c.name = cy
	c.send(cy)
	welcome := c.next("a welcome")
	if chattest.ClassroomAddr() != "" { // earlier tests' clients may not be gone yet
		welcome.Here = slices.DeleteFunc(welcome.Here, func(n string) bool { return !chattest.KnownPeer(n) })
	}
	slices.Sort(welcome.Here)
	want := []string{ana, bob}
	slices.Sort(want)
	assert.Equal(t, message{Event: "welcome", Body: cy, Here: want}, welcome.as(message{Here: want}),
		"the welcome on server 3 lists who is in on servers 1 and 2")
	a.expect(message{Event: "arrived", Body: cy})
	b.expect(message{Event: "arrived", Body: cy})
	c.send("hello from server 3")
	for _, cli := range []*wsClient{a, b, c} {
		cli.expect(says(cy, "hello from server 3"))
	}
	b.send("/quit")
	b.expectClosed()
	a.expect(message{Event: "left", Body: bob})
	c.expect(message{Event: "left", Body: bob})
}

func TestANameTakenOnOneServerIsRefusedOnAnother(t *testing.T) {
	chattest.Parallel(t)
	s := clusterAddrs(t, 2)
	ana := chattest.Name("ana")
	a := join(t, s[0], ana)
	c := dial(t, s[1])
	c.send(ana)
	c.expect(message{Event: "refused", Body: "name is taken"})
	// Once ana has left, from server 1, the name is free on server 2.
	bob := join(t, s[1], chattest.Name("bob"))
	a.expect(message{Event: "arrived", Body: bob.name})
	a.send("/quit")
	a.expectClosed()
	bob.expect(message{Event: "left", Body: ana})
	takeWithin(t, c, ana, chattest.Timeout)
}

// takeWithin has c ask for name until it gets it, and fails the test if
// it is still refused after d.
func takeWithin(t *testing.T, c *wsClient, name string, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		c.send(name)
		m := c.next("a welcome or a refusal")
		if m.is(message{Event: "welcome", Body: name}) {
			return
		}
		require.Equal(t, message{Event: "refused", Body: "name is taken"}, m.as(message{}))
		require.True(t, time.Now().Before(deadline), "%s still taken %v after its client left", name, d)
		time.Sleep(10 * time.Millisecond) // polling, with a deadline
	}
}

// TestThreeServersDeliverEveryMessageInOneOrder is the step's promise: many
// senders on three servers, and every client on every server gets every
// message, in the same order as every other client.
func TestThreeServersDeliverEveryMessageInOneOrder(t *testing.T) {
	chattest.Parallel(t)
	const perServer, senders, perSender = 6, 6, 50 // senders: the first ones of each server
	s := clusterAddrs(t, 3)
	var clients []*wsClient
	for i := range perServer {
		for _, addr := range s {
			clients = append(clients, join(t, addr, chattest.Name(fmt.Sprint("c", i))))
		}
	}
	// Once the last one has arrived everywhere, everyone hears every message.
	last := clients[len(clients)-1].name
	for _, c := range clients[:len(clients)-1] {
		require.NoError(t, c.tryUntil(message{Event: "arrived", Body: last}))
	}
	var wg sync.WaitGroup
	for _, c := range clients[:senders] {
		wg.Go(func() {
			for i := range perSender {
				if err := websocket.JSON.Send(c.ws, message{Body: fmt.Sprint(i)}); err != nil {
					t.Errorf("%s sending message %d: %v", c.name, i, err)
					return
				}
			}
		})
	}
	sending := map[string]bool{}
	for _, c := range clients[:senders] {
		sending[c.name] = true
	}
	heard := make([][]message, len(clients)) // what each heard the senders say
	for i, c := range clients {
		wg.Go(func() {
			for len(heard[i]) < senders*perSender {
				m, err := c.tryNext()
				if err != nil {
					t.Errorf("%s, on server %d, got %d of %d messages, then %v",
						c.name, i%3+1, len(heard[i]), senders*perSender, err)
					return
				}
				if m.Event == "" && sending[m.Author] {
					heard[i] = append(heard[i], m)
				}
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	next := map[string]int{} // each sender's messages arrive in the order sent
	for _, m := range heard[0] {
		require.Equal(t, fmt.Sprint(next[m.Author]), m.Body, "%s's messages out of order", m.Author)
		next[m.Author]++
	}
	for i := range clients[1:] {
		require.Equal(t, heard[0], heard[i+1], "%s (server 1) and %s (server %d) heard the messages in different orders",
			clients[0].name, clients[i+1].name, (i+1)%3+1)
	}
}

func TestHistoryIsSharedAndSurvivesARestartOfEveryServer(t *testing.T) {
	chattest.InProcess(t)
	chattest.Parallel(t)
	store := t.TempDir()
	opts := options{idle: time.Minute, history: 3, maxConns: 100}
	ns, stop, err := embedNATS("", store)
	require.NoError(t, err)
	stopNATS := sync.OnceFunc(stop)
	t.Cleanup(stopNATS)
	s1, s2 := startServer(t, ns, opts), startServer(t, ns, opts)
	ana := chattest.Name("ana")
	a := join(t, s1.addr, ana)
	for i := range 5 {
		a.send(fmt.Sprint("m", i))
		a.expect(says(ana, fmt.Sprint("m", i)))
	}
	bob := chattest.Name("bob")
	b := join(t, s2.addr, bob) // on the other server
	for _, m := range []string{"m2", "m3", "m4"} {
		b.expect(says(ana, m))
	}
	// Stop everything, NATS too, and start again on the same store.
	require.NoError(t, s1.stop(t))
	require.NoError(t, s2.stop(t))
	stopNATS()
	ns = startNATS(t, store)
	s3 := startServer(t, ns, opts)
	cy := chattest.Name("cy")
	c := join(t, s3.addr, cy)
	for _, m := range []string{"m2", "m3", "m4"} {
		c.expect(says(ana, m))
	}
	c.send("after the restart")
	c.expect(says(cy, "after the restart"))
}

func TestAServerThatLosesNATSTellsItsClientsAndTheOthersCarryOn(t *testing.T) {
	chattest.Parallel(t)
	_, s := startCluster(t, 2, defaults)
	ana, bob := chattest.Name("ana"), chattest.Name("bob")
	a := join(t, s[0].addr, ana)
	b := join(t, s[1].addr, bob)
	a.expect(message{Event: "arrived", Body: bob})
	b.send("before")
	a.expect(says(bob, "before"))
	b.expect(says(bob, "before"))

	s[1].nc.Close() // server 2 loses NATS
	m := b.next("a bye saying NATS was lost")
	assert.Equal(t, message{Event: "bye", Body: "lost the connection to NATS"}, m.as(message{}))
	b.expectClosed()
	select {
	case err := <-s[1].done:
		assert.ErrorIs(t, err, errLostNATS, "serve should say why it stopped")
		s[1].done <- err
	case <-time.After(chattest.Timeout):
		t.Fatalf("server 2 still runs %v after losing NATS", chattest.Timeout)
	}

	// Server 1 carries on; nothing acknowledged is missing from history.
	a.send("after")
	a.expect(says(ana, "after"))
	cy := chattest.Name("cy")
	c := join(t, s[0].addr, cy)
	c.expect(says(bob, "before"))
	c.expect(says(ana, "after"))
}

func TestTheNamesOfAServerThatDiedAreFreedWithinTheirLease(t *testing.T) {
	if testing.Short() {
		t.Skip("slow: waits for a name's lease to run out: -short")
	}
	chattest.Parallel(t)
	_, s := startCluster(t, 2, defaults)
	ana := chattest.Name("ana")
	join(t, s[1].addr, ana)
	s[1].nc.Close() // server 2 dies, as far as NATS can tell: it renews nothing
	takeWithin(t, dial(t, s[0].addr), ana, nameLease+chattest.Timeout)
}

func TestProgramSaysGoodbyeAndStopsOnSIGTERM(t *testing.T) {
	chattest.Parallel(t)
	p := chattest.StartProcess(t, "-addr", "127.0.0.1:0")
	a := join(t, p.Addr, chattest.Name("ana"))
	assert.Equal(t, 0, p.Stop(syscall.SIGTERM, writeTimeout+2*time.Second))
	a.expect(message{Event: "bye", Body: "server is shutting down"})
	a.expectClosed()
}

func TestFiveHundredClientsJoinChatAndLeave(t *testing.T) {
	if testing.Short() {
		t.Skip("slow: -short")
	}
	_, s := startCluster(t, 1, defaults)
	addr := s[0].addr
	const n = 500
	first := join(t, addr, chattest.Name("first"))
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
		return c.tryUntil(message{Event: "welcome", Body: c.name})
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
	start := time.Now()
	for left < n {
		if m := first.next(fmt.Sprintf("departure %d of %d", left+1, n)); m.Event == "left" {
			left++
			if left%50 == 0 {
				t.Logf("%d left after %v", left, time.Since(start))
			}
		}
	}
}

// A server that finds a message missing from the stream (dropped by the
// stream's limits before the server read it) has fallen behind: next
// fails, and the follower stops the server, rather than skip it.
func TestAGapInTheStreamIsAnError(t *testing.T) {
	chattest.OwnCode(t)
	ns := startNATS(t, t.TempDir())
	nc, err := nats.Connect("", nats.InProcessServer(ns), nats.NoReconnect())
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	first, err := openCluster(context.Background(), nc, 10, func(error) {})
	require.NoError(t, err)
	for _, body := range []string{"one", "two", "three"} {
		require.NoError(t, first.publish(message{Author: "ana", Body: body}))
	}
	first.close()
	stream, err := first.js.Stream(context.Background(), "ROOM")
	require.NoError(t, err)
	require.NoError(t, stream.DeleteMsg(context.Background(), 2)) // dropped unread
	c, err := openCluster(context.Background(), nc, 10, func(error) {})
	require.NoError(t, err)
	defer c.close()
	// As if c's feed had started before the three were stored: past where
	// it started, every message must come.
	c.last = 0
	m, err := c.next()
	require.NoError(t, err)
	assert.Equal(t, says("ana", "one"), m.as(message{}))
	_, err = c.next()
	assert.ErrorContains(t, err, "fell behind the stream: messages 2 to 2 are gone")
}
