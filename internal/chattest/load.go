package chattest

import (
	"fmt"
	"strings"
	"sync"
	"testing"
)

// Parallel marks t parallel, except in classroom mode, where every test
// shares the one server under test and so must run alone.
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
			return fmt.Errorf("%s flooding: waiting for echo %d of %d: %w", c.Addr(), got, n, err)
		}
		want := echo(fmt.Sprintf("%s-%d", tag, got))
		switch {
		case line == want:
			got++
		case strings.HasPrefix(line, echo(tag+"-")):
			return fmt.Errorf("%s flooding: expected %q, got %q: an echo was lost or reordered", c.Addr(), want, line)
		}
	}
	return nil
}

// Concurrently runs f(i) for i in [0, n) in n goroutines and returns the
// first error any of them reported.
func Concurrently(n int, f func(i int) error) error {
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			if err := f(i); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// TalkUntil sends numbered lines from c, ten at a time, reading everything
// the server sends it, until stop is closed or it has sent most lines. It
// returns every line it received, in order. echo(text) is the line the
// server sends back for text.
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
