package chattest

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// Parallel marks t parallel, except with CHAT_ADDR, where every test
// shares the one server under test and so must run alone. (With CHAT_CMD
// every test has a server of its own.)
func Parallel(t *testing.T) {
	if ClassroomAddr() == "" {
		t.Parallel()
	}
}

// Flood sends n lines "<tag>-<i>" from c as fast as its own echoes come
// back: it keeps at most window of them unanswered. echo(text) is the line
// the server sends back for text. Lines that are not echoes of c's own
// (arrivals, other clients' messages) are skipped; every echo must come
// back, in order.
func (c *Client) Flood(n, window int, tag string, echo func(text string) string) error {
	sent, got := 0, 0
	for got < n {
		var batch []string
		for sent < n && sent-got < window {
			batch = append(batch, fmt.Sprintf("%s-%d", tag, sent))
			sent++
		}
		if len(batch) > 0 {
			if err := c.TrySend(batch...); err != nil {
				return err
			}
		}
		line, err := c.ReadLine()
		if err != nil {
			return fmt.Errorf("%s flooding: waiting for echo %d of %d: %w", c.Who(), got, n, err)
		}
		want := echo(fmt.Sprintf("%s-%d", tag, got))
		switch {
		case line == want:
			got++
		case strings.HasPrefix(line, echo(tag+"-")):
			return fmt.Errorf("%s flooding: expected %q, got %q: an echo was lost or reordered", c.Who(), want, line)
		}
	}
	return nil
}

// Concurrently runs f(i) for i in [0, n) in n goroutines and returns the
// first error any of them reported.
func Concurrently(n int, f func(i int) error) error {
	return ConcurrentlyAtMost(n, n, f)
}

// AtOnce is how many clients the load tests have joining (or catching up)
// at any one moment. Every join waits for the broadcaster to announce the
// joins ahead of it to everyone already in, and the broadcaster announces
// one at a time; with all of 1,000 joining at once, the last one waited for
// the whole room's work, far longer than Timeout on a busy 2-core machine
// with the race detector. With AtOnce of them, a join waits for at most
// AtOnce announcements, and the whole room still joins within seconds.
const AtOnce = 50

// ConcurrentlyAtMost runs f(i) for i in [0, n), at most limit at a time,
// and returns the first error any of them reported, saying how far the
// others had got. Once one has failed it starts no more.
func ConcurrentlyAtMost(n, limit int, f func(i int) error) error {
	var (
		wg        sync.WaitGroup
		slots     = make(chan struct{}, limit)
		mu        sync.Mutex
		first     error
		succeeded int
	)
	failed := func() bool {
		mu.Lock()
		defer mu.Unlock()
		return first != nil
	}
	for i := range n {
		slots <- struct{}{}
		if failed() {
			break
		}
		wg.Go(func() {
			defer func() { <-slots }()
			err := f(i)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				succeeded++
			case first == nil:
				first = fmt.Errorf("%w (%d of %d had succeeded by then, at most %d at a time)", err, succeeded, n, limit)
			}
		})
	}
	wg.Wait()
	return first
}

// TalkUntil sends numbered lines from c, ten at a time, reading everything
// the server sends it, until stop is closed. It returns every line it
// received, in order, and an error if it sent most lines and was never
// told to stop. echo(text) is the line the server sends back for text.
func (c *Client) TalkUntil(stop <-chan struct{}, most int, echo func(text string) string) ([]string, error) {
	var got []string
	for i := 0; i < most; i += 10 {
		select {
		case <-stop:
			return got, nil
		default:
		}
		var batch []string
		for j := range 10 {
			batch = append(batch, fmt.Sprint(i+j))
		}
		if err := c.TrySend(batch...); err != nil {
			return got, err
		}
		for {
			line, err := c.ReadLine()
			if err != nil {
				return got, err
			}
			got = append(got, line)
			if line == echo(batch[len(batch)-1]) {
				break
			}
		}
	}
	return got, fmt.Errorf("sent %d lines and was never told to stop", most)
}

// ReadThroughFlood is a reader's part while another client floods the
// room: c reads at full speed for d, or until it has received n lines
// equal to flood, then sends text, and reads on until its echo comes back.
// It returns how many lines of the flood it received in d, and an error if
// c is disconnected, or hears nothing for Timeout, on the way.
func (c *Client) ReadThroughFlood(flood string, n int, d time.Duration, text, echo string) (int, error) {
	end := time.Now().Add(d)
	got := 0
	for got < n && time.Now().Before(end) {
		line, err := c.ReadLine()
		if err != nil {
			return got, fmt.Errorf("%s, after %d lines of the flood: %w", c.Addr(), got, err)
		}
		if line == flood {
			got++
		}
	}
	if err := c.TrySend(text); err != nil {
		return got, err
	}
	if skipped, err := c.TryUntil(echo); err != nil {
		return got, fmt.Errorf("%s sent %q during the flood: %w (%d lines read meanwhile)", c.Addr(), text, err, len(skipped))
	}
	return got, nil
}
