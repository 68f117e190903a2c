package main

import "golang.org/x/time/rate"

// Flood control: a client's lines (step 5: messages) reach the room at
// most linesPerSecond a second, after a burst of up to linesAtOnce. That is
// far more than anyone types or pastes, and far less than a program can
// send: without it, one client writing 200,000 empty lines at once had the
// readers in the room dropped for falling behind.
const (
	linesPerSecond = 1000
	linesAtOnce    = 1000
)

// newLimiter is a client's token bucket: it holds up to linesAtOnce tokens,
// gains linesPerSecond a second, and each line spends one. Its Wait returns
// at once while a token is left, and otherwise waits for the next. Meanwhile
// the client's reader reads nothing, so TCP slows the flooder down, and
// nobody else pays.
func newLimiter() *rate.Limiter { return rate.NewLimiter(linesPerSecond, linesAtOnce) }
