package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"net"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

const (
	natsTimeout = 5 * time.Second  // for one request to NATS: past that, NATS is lost
	nameLease   = 15 * time.Second // a name held by a server that stopped renewing it is freed after this
	// slack is how many messages, beyond the history, the stream keeps for
	// servers that are behind: one further behind has lost the room.
	slack = 10000
)

// connectNATS connects to the NATS at url or, if url is "", to a NATS
// server with JetStream that it starts inside this process, storing the
// stream in store (a temporary directory if ""), and listening for other
// servers at listen (for nobody if ""). done closes the connection and
// stops the NATS server it started, if any.
func connectNATS(url, listen, store string) (nc *nats.Conn, done func(), err error) {
	if url != "" {
		if nc, err = nats.Connect(url, nats.Name("gochat"), nats.NoReconnect()); err != nil {
			return nil, nil, err
		}
		return nc, nc.Close, nil
	}
	ns, stop, err := embedNATS(listen, store)
	if err != nil {
		return nil, nil, err
	}
	if nc, err = nats.Connect("", nats.InProcessServer(ns), nats.NoReconnect()); err != nil {
		stop()
		return nil, nil, err
	}
	if listen != "" {
		log.Printf("NATS: other servers can join with -nats %s", ns.ClientURL())
	}
	return nc, func() { nc.Close(); stop() }, nil
}

// embedNATS starts a NATS server with JetStream in this process. stop shuts
// it down, waits until it has, and removes the store if it made it.
func embedNATS(listen, store string) (ns *server.Server, stop func(), err error) {
	opts := &server.Options{ServerName: "gochat", JetStream: true, StoreDir: store, NoSigs: true}
	if listen == "" {
		opts.DontListen = true // reached only through nats.InProcessServer
	} else {
		host, port, err := net.SplitHostPort(listen)
		if err != nil {
			return nil, nil, fmt.Errorf("-nats-listen: %w", err)
		}
		opts.Host = host
		if opts.Port, err = strconv.Atoi(port); err != nil {
			return nil, nil, fmt.Errorf("-nats-listen: %w", err)
		}
		if opts.Port == 0 {
			opts.Port = server.RANDOM_PORT
		}
	}
	removeStore := func() {}
	if store == "" {
		if opts.StoreDir, err = os.MkdirTemp("", "gochat-nats-"); err != nil {
			return nil, nil, err
		}
		removeStore = func() { os.RemoveAll(opts.StoreDir) }
	}
	if ns, err = server.NewServer(opts); err != nil {
		removeStore()
		return nil, nil, err
	}
	stop = func() { ns.Shutdown(); ns.WaitForShutdown(); removeStore() }
	ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		stop()
		return nil, nil, errors.New("the embedded NATS server did not start")
	}
	return ns, stop, nil
}

// errLostNATS is why a server stops when it cannot reach NATS: its clients
// are told so.
var errLostNATS = errors.New("lost the connection to NATS")

// lostNATS is errLostNATS, with what went wrong.
func lostNATS(err error) error {
	if err == nil {
		return errLostNATS
	}
	return fmt.Errorf("%w: %w", errLostNATS, err)
}

// cluster is a server's part of the room in NATS: the stream that orders
// what is said, arrivals and departures, and the bucket that holds every
// server's names.
type cluster struct {
	js       jetstream.JetStream
	feed     jetstream.MessagesContext // the stream, from its oldest message on
	last     uint64                    // the stream's last message when the feed started
	given    uint64                    // the last message next gave
	caughtUp chan struct{}             // closed once the feed has given that one
	names    jetstream.KeyValue
	mu       sync.Mutex
	held     map[string]uint64  // this server's names, and their revisions in the bucket
	coming   map[string]*client // this server's clients, by the id of their arrival or departure
	closed   chan struct{}      // closed by close: the feed and the renewal stop
	renewed  chan struct{}      // closed by renew when it is done
}

// openCluster creates or joins the room's stream, which keeps the newest
// history+slack messages (said, arrivals and departures), and the names
// bucket. If the connection to NATS is lost, it calls lost.
func openCluster(ctx context.Context, nc *nats.Conn, history int, lost func(error)) (*cluster, error) {
	nc.SetErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { log.Printf("NATS: %v", err) })
	nc.SetDisconnectErrHandler(func(_ *nats.Conn, err error) { lost(lostNATS(err)) })
	nc.SetClosedHandler(func(*nats.Conn) { lost(lostNATS(nats.ErrConnectionClosed)) })
	ctx, cancel := context.WithTimeout(ctx, natsTimeout)
	defer cancel()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	stream, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:     "ROOM",
		Subjects: []string{"room.*"},
		MaxMsgs:  int64(history + slack),
		Storage:  jetstream.FileStorage,
	})
	if err != nil {
		return nil, fmt.Errorf("the room's stream: %w", err)
	}
	names, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "names", TTL: nameLease})
	if err != nil {
		return nil, fmt.Errorf("the names bucket: %w", err)
	}
	// An ordered consumer gives every message once, in the stream's
	// order, with no gap: if one goes missing, it starts again after the
	// last one it gave.
	consumer, err := stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		return nil, err
	}
	c := &cluster{js: js, last: stream.CachedInfo().State.LastSeq, caughtUp: make(chan struct{}),
		names: names, held: make(map[string]uint64), coming: make(map[string]*client), closed: make(chan struct{}), renewed: make(chan struct{})}
	if c.last == 0 || stream.CachedInfo().State.Msgs == 0 {
		close(c.caughtUp)
	}
	if c.feed, err = consumer.Messages(); err != nil {
		return nil, err
	}
	go c.renew()
	return c, nil
}

// publish sends m to the stream, and returns once the stream has stored
// it: it is then in the history, whatever happens to this server.
func (c *cluster) publish(m message) error {
	ctx, cancel := context.WithTimeout(context.Background(), natsTimeout)
	defer cancel()
	kind := m.Event
	if kind == "" {
		kind = "said"
	}
	msg := nats.NewMsg("room." + kind)
	msg.Data, _ = json.Marshal(m) // never fails: a struct of strings
	if m.own != nil {
		// next finds the client by an id that no server uses twice.
		id := rand.Text()
		msg.Header.Set(ownHeader, id)
		c.mu.Lock()
		c.coming[id] = m.own
		c.mu.Unlock()
	}
	_, err := c.js.PublishMsg(ctx, msg)
	return err
}

// ownHeader holds, on an arrival or a departure, the id of the client.
const ownHeader = "Chat-Client"

// next waits for the stream's next message. It fails once close is called
// (jetstream.ErrMsgIteratorClosed) or if NATS is lost.
func (c *cluster) next() (message, error) {
	for {
		msg, err := c.feed.Next()
		if err != nil {
			return message{}, err
		}
		meta, err := msg.Metadata()
		if err != nil {
			return message{}, err
		}
		// Past what the stream held when the feed started, no message may
		// be missing: one the stream dropped before this server read it
		// (it was more than slack messages behind) is lost to its clients.
		seq := meta.Sequence.Stream
		if seq > c.last+1 && seq != c.given+1 {
			return message{}, fmt.Errorf("fell behind the stream: messages %d to %d are gone", max(c.given, c.last)+1, seq-1)
		}
		c.given = seq
		if seq >= c.last {
			c.markCaughtUp()
		}
		var m message
		if err := json.Unmarshal(msg.Data(), &m); err != nil {
			log.Printf("the stream holds a message that is not ours (%s): %v", msg.Subject(), err)
			continue
		}
		m.Time = meta.Timestamp.UTC().Format(time.RFC3339) // the stream's clock: one for all servers
		if id := msg.Headers().Get(ownHeader); id != "" {
			c.mu.Lock()
			m.own = c.coming[id] // nil if it came or went on another server
			delete(c.coming, id)
			c.mu.Unlock()
		}
		return m, nil
	}
}

func (c *cluster) markCaughtUp() {
	select {
	case <-c.caughtUp:
	default:
		close(c.caughtUp)
	}
}

// claim takes name in the bucket for this server, unless another client,
// on any server, has it: then it reports false.
func (c *cluster) claim(name string) (bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), natsTimeout)
	defer cancel()
	rev, err := c.names.Create(ctx, key(name), nil)
	if errors.Is(err, jetstream.ErrKeyExists) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	c.mu.Lock()
	c.held[name] = rev
	c.mu.Unlock()
	return true, nil
}

// release gives name back.
func (c *cluster) release(name string) {
	c.mu.Lock()
	delete(c.held, name)
	c.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), natsTimeout)
	defer cancel()
	if err := c.names.Delete(ctx, key(name)); err != nil {
		log.Printf("%s: not released, so held until it expires: %v", name, err)
	}
}

// renew keeps this server's names from expiring, until close. A server
// that dies stops renewing: its names are freed within nameLease.
func (c *cluster) renew() {
	defer close(c.renewed)
	tick := time.NewTicker(nameLease / 3)
	defer tick.Stop()
	for {
		select {
		case <-c.closed:
			return
		case <-tick.C:
		}
		c.mu.Lock()
		held := make(map[string]uint64, len(c.held))
		for name, rev := range c.held {
			held[name] = rev
		}
		c.mu.Unlock()
		for name, rev := range held {
			ctx, cancel := context.WithTimeout(context.Background(), natsTimeout)
			// Update, not Put: it fails if the name was released meanwhile.
			rev, err := c.names.Update(ctx, key(name), nil, rev)
			cancel()
			c.mu.Lock()
			if _, ok := c.held[name]; ok {
				if err != nil {
					log.Printf("%s: could not renew the name: %v", name, err)
				} else {
					c.held[name] = rev
				}
			}
			c.mu.Unlock()
		}
	}
}

// close stops the feed (next fails) and the renewal of names.
func (c *cluster) close() {
	c.feed.Stop()
	close(c.closed)
	<-c.renewed
}

// key is name as a key of the bucket, whose keys are plain ASCII.
func key(name string) string { return base64.RawURLEncoding.EncodeToString([]byte(name)) }
