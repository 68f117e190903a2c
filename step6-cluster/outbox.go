package main

import (
	"bytes"
	"net"
	"runtime"
	"sync"
	"time"
)

const (
	maxPending   = 256 << 10       // bytes waiting for a client: past that, it is dropped
	writeTimeout = 5 * time.Second // for one write: past that, the client is dropped
)

// outbox is a client's queue of output. The broadcaster puts text in and
// never waits; the client's writer takes all of it at once.
type outbox struct {
	mu      sync.Mutex
	pending *bytes.Buffer // output not taken yet; nil when there is none
	closed  bool          // no more output: take ends once pending is empty
	ready   chan struct{} // holds a token while pending is not nil
}

func newOutbox() *outbox { return &outbox{ready: make(chan struct{}, 1)} }

// put queues text, or reports false if the client would then be more than
// maxPending bytes behind. Once the outbox is closed, put does nothing.
func (o *outbox) put(text string) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	switch {
	case o.closed:
		return true
	case o.pending == nil:
		o.pending = buffers.Get().(*bytes.Buffer)
		o.ready <- struct{}{} // wake the writer; ready is empty while pending is nil
	case o.pending.Len()+len(text) > maxPending:
		return false
	}
	o.pending.WriteString(text)
	return true
}

// close says no more output will come.
func (o *outbox) close() {
	o.mu.Lock()
	defer o.mu.Unlock()
	if !o.closed {
		o.closed = true
		close(o.ready)
	}
}

// take waits for output and returns all of it, or false once the outbox is
// closed and empty.
func (o *outbox) take() (*bytes.Buffer, bool) {
	<-o.ready
	// Let others run first: what the broadcaster queues meanwhile joins the batch.
	runtime.Gosched()
	o.mu.Lock()
	defer o.mu.Unlock()
	batch := o.pending
	o.pending = nil
	return batch, batch != nil
}

// send writes a batch from take to conn within writeTimeout, then gives
// its buffer back to the pool.
func send(conn net.Conn, batch *bytes.Buffer) error {
	err := conn.SetWriteDeadline(time.Now().Add(writeTimeout))
	if err == nil {
		_, err = conn.Write(batch.Bytes())
	}
	batch.Reset()
	buffers.Put(batch)
	return err
}

// buffers lends outboxes empty buffers, which they hold only while output
// waits: an idle client holds none.
var buffers = sync.Pool{New: func() any { return new(bytes.Buffer) }}
