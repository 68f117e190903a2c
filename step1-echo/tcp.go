package main

import (
	"bufio"
	"errors"
	"io"
	"log"
	"net"
	"time"
)

// maxLine is the longest line a client may send, in bytes, with its "\n".
const maxLine = 4096

// accept waits for the next connection, and fails only once ln is closed:
// it logs other errors (out of file descriptors, say) and tries again.
func accept(ln net.Listener) (net.Conn, error) {
	for {
		conn, err := ln.Accept()
		if err == nil || errors.Is(err, net.ErrClosed) {
			return conn, err
		}
		log.Printf("accept: %v (trying again)", err)
		time.Sleep(50 * time.Millisecond)
	}
}

// newScanner reads r line by line ("\r\n" endings too), and stops at a line
// longer than maxLine with bufio.ErrTooLong.
func newScanner(r io.Reader) *bufio.Scanner {
	input := bufio.NewScanner(r)
	input.Buffer(make([]byte, 0, 512), maxLine)
	return input
}
