package main

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"gochat-steps/internal/chattest"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/net/websocket"
)

// The server writes its frames itself, many in one write, while
// x/net/websocket answers pings on the same connection. A client that
// pings all through a burst must get every message and every pong, each
// frame whole and by the rules of RFC 6455, read here byte by byte.
func TestFramesStayWholeWhilePingsAreAnswered(t *testing.T) {
	chattest.Parallel(t)
	addr := start(t, defaults)
	pinger, talker := chattest.Name("pinger"), chattest.Name("talker")
	raw := dialRaw(t, addr)
	raw.send(t, 0x1, fmt.Sprintf(`{"body": %q}`, pinger))
	op, payload := raw.next(t)
	require.Equal(t, byte(0x1), op)
	require.JSONEq(t, fmt.Sprintf(`{"author": "", "body": %q, "event": "welcome"}`, pinger), string(payload))
	tc := join(t, addr, talker)

	const messages, pings = 200, 20
	text := strings.Repeat("z", 300) // over 125 bytes: a 16-bit length
	require.NoError(t, tc.ws.SetWriteDeadline(time.Now().Add(chattest.Timeout)))
	sent := make(chan error, 1)
	go func() {
		for i := range messages {
			if err := websocket.JSON.Send(tc.ws, message{Body: fmt.Sprint(i, text)}); err != nil {
				sent <- err
				return
			}
		}
		sent <- nil
	}()
	for i := range pings {
		raw.send(t, 0x9, fmt.Sprint("ping ", i))
	}
	gotMessages, gotPongs := 0, 0
	for gotMessages < messages || gotPongs < pings {
		op, payload := raw.next(t)
		switch op {
		case 0xA: // pong
			require.Equal(t, fmt.Sprint("ping ", gotPongs), string(payload))
			gotPongs++
		case 0x1: // text
			var m message
			require.NoError(t, json.Unmarshal(payload, &m), "a frame that is not whole: %q", payload)
			if m.Author == talker {
				require.Equal(t, fmt.Sprint(gotMessages, text), m.Body)
				gotMessages++
			}
		default:
			t.Fatalf("unexpected frame, opcode %#x: %q", op, payload)
		}
	}
	require.NoError(t, <-sent)
}

// rawClient speaks WebSocket over a plain TCP connection.
type rawClient struct {
	conn net.Conn
	in   *bufio.Reader
}

// dialRaw opens a WebSocket to addr by hand.
func dialRaw(t *testing.T, addr string) *rawClient {
	conn, err := net.DialTimeout("tcp", addr, chattest.Timeout)
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	require.NoError(t, conn.SetDeadline(time.Now().Add(chattest.Timeout)))
	_, err = fmt.Fprintf(conn, "GET /ws HTTP/1.1\r\nHost: %s\r\nOrigin: http://%[1]s\r\n"+
		"Upgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", addr)
	require.NoError(t, err)
	in := bufio.NewReader(conn)
	resp, err := http.ReadResponse(in, nil)
	require.NoError(t, err)
	require.Equal(t, http.StatusSwitchingProtocols, resp.StatusCode)
	return &rawClient{conn, in}
}

// send sends a frame, masked as a client's must be.
func (c *rawClient) send(t *testing.T, opcode byte, payload string) {
	require.Less(t, len(payload), 126)
	mask := []byte{1, 2, 3, 4}
	f := append([]byte{0x80 | opcode, 0x80 | byte(len(payload))}, mask...)
	for i := range len(payload) {
		f = append(f, payload[i]^mask[i%4])
	}
	_, err := c.conn.Write(f)
	require.NoError(t, err)
}

// next reads a frame: it must be whole (FIN set) and unmasked.
func (c *rawClient) next(t *testing.T) (opcode byte, payload []byte) {
	require.NoError(t, c.conn.SetReadDeadline(time.Now().Add(chattest.Timeout)))
	var head [2]byte
	_, err := io.ReadFull(c.in, head[:])
	require.NoError(t, err)
	assert.Equal(t, byte(0x80), head[0]&0xF0, "FIN set, no extension bits")
	require.Zero(t, head[1]&0x80, "a server's frames are not masked")
	n := uint64(head[1] & 0x7F)
	switch n {
	case 126:
		var ext [2]byte
		_, err = io.ReadFull(c.in, ext[:])
		n = uint64(binary.BigEndian.Uint16(ext[:]))
	case 127:
		var ext [8]byte
		_, err = io.ReadFull(c.in, ext[:])
		n = binary.BigEndian.Uint64(ext[:])
	}
	require.NoError(t, err)
	require.Less(t, n, uint64(1<<20))
	payload = make([]byte, n)
	_, err = io.ReadFull(c.in, payload)
	require.NoError(t, err)
	return head[0] & 0x0F, payload
}
