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

// The writers send their frames through x/net/websocket, while it answers
// pings on the same connection from another goroutine. A client that pings
// all through a burst must get every message and every pong, each frame
// whole and by the rules of RFC 6455, read here byte by byte; every text
// frame is a JSON array of messages.
func TestFramesStayWholeWhilePingsAreAnswered(t *testing.T) {
	chattest.Parallel(t)
	addr := start(t, defaults)
	pinger, talker := chattest.Name("pinger"), chattest.Name("talker")
	raw := joinRaw(t, addr, pinger)
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
			var ms []message
			require.NoError(t, json.Unmarshal(payload, &ms), "a frame that is not whole, or not a JSON array: %q", payload)
			for _, m := range ms {
				if m.Author == talker {
					require.Equal(t, fmt.Sprint(gotMessages, text), m.Body)
					gotMessages++
				}
			}
		default:
			t.Fatalf("unexpected frame, opcode %#x: %q", op, payload)
		}
	}
	require.NoError(t, <-sent)
}

// The server answers a ping whenever it comes, even long after it last
// wrote to the client: the deadline of its last write must not fail the
// pong, and with it the connection.
func TestAPingLongAfterTheLastWriteIsAnswered(t *testing.T) {
	chattest.Parallel(t)
	addr := start(t, defaults)
	raw := joinRaw(t, addr, chattest.Name("pinger"))
	// The passage of time is what this test is about: the server's last
	// write (the welcome) was more than writeTimeout ago.
	time.Sleep(writeTimeout + time.Second)
	raw.send(t, 0x9, "still there?")
	op, payload, err := raw.tryNext()
	require.NoError(t, err, "after %v of silence, a ping got no pong: the connection ended", writeTimeout+time.Second)
	assert.Equal(t, byte(0xA), op, "after a ping, expected a pong, got opcode %#x: %q", op, payload)
	assert.Equal(t, "still there?", string(payload))
}

// rawClient speaks WebSocket over a plain TCP connection.
type rawClient struct {
	conn net.Conn
	in   *bufio.Reader
	name string // once joined
}

// joinRaw opens a WebSocket to addr by hand, and joins as name.
func joinRaw(t *testing.T, addr, name string) *rawClient {
	raw := dialRaw(t, addr)
	raw.name = name
	raw.send(t, 0x1, fmt.Sprintf(`{"body": %q}`, name))
	op, payload := raw.next(t)
	require.Equal(t, byte(0x1), op)
	var ms []message
	require.NoError(t, json.Unmarshal(payload, &ms), "not a JSON array of messages: %q", payload)
	require.NotEmpty(t, ms)
	require.Equal(t, message{Event: "welcome", Body: name}, ms[0].as(message{}))
	return raw
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
	return &rawClient{conn: conn, in: in}
}

// send sends a whole frame (FIN set), masked as a client's must be.
func (c *rawClient) send(t *testing.T, opcode byte, payload string) {
	c.sendFrame(t, 0x80|opcode, payload)
}

// sendFrame sends a frame whose first byte (FIN, RSV1-3, opcode) is first.
func (c *rawClient) sendFrame(t *testing.T, first byte, payload string) {
	t.Helper()
	_, err := c.conn.Write(frame(first, payload))
	require.NoError(t, err)
}

// frame is a frame of a payload under 126 bytes, masked.
func frame(first byte, payload string) []byte {
	if len(payload) > 125 {
		panic("frame: a payload of 126 bytes or more needs a longer header")
	}
	mask := []byte{1, 2, 3, 4}
	f := append([]byte{first, 0x80 | byte(len(payload))}, mask...)
	for i := range len(payload) {
		f = append(f, payload[i]^mask[i%4])
	}
	return f
}

// nextMessage reads frames up to the next text frame, and returns its
// messages; it skips the server's pings, and does not answer them.
func (c *rawClient) nextMessages() ([]message, error) {
	for {
		op, payload, err := c.tryNext()
		if err != nil {
			return nil, err
		}
		if op == 0x9 {
			continue
		}
		if op != 0x1 {
			return nil, fmt.Errorf("expected a text frame, got opcode %#x: %q", op, payload)
		}
		var ms []message
		if err := json.Unmarshal(payload, &ms); err != nil || len(ms) == 0 {
			return nil, fmt.Errorf("a frame that is not a JSON array of messages: %q", payload)
		}
		return ms, nil
	}
}

// next reads a frame: it must be whole (FIN set) and unmasked.
func (c *rawClient) next(t *testing.T) (opcode byte, payload []byte) {
	t.Helper()
	opcode, payload, err := c.tryNext()
	require.NoError(t, err)
	return opcode, payload
}

// tryNext is next, reporting what went wrong instead of failing the test.
func (c *rawClient) tryNext() (opcode byte, payload []byte, err error) {
	if err := c.conn.SetReadDeadline(time.Now().Add(chattest.Timeout)); err != nil {
		return 0, nil, err
	}
	var head [2]byte
	if _, err := io.ReadFull(c.in, head[:]); err != nil {
		return 0, nil, err
	}
	if head[0]&0xF0 != 0x80 || head[1]&0x80 != 0 {
		return 0, nil, fmt.Errorf("a frame not whole (no FIN), with extension bits, or masked: %#x %#x", head[0], head[1])
	}
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
	if err != nil {
		return 0, nil, err
	}
	if n >= 1<<20 {
		return 0, nil, fmt.Errorf("a frame of %d bytes: far more than the test sends", n)
	}
	payload = make([]byte, n)
	if _, err := io.ReadFull(c.in, payload); err != nil {
		return 0, nil, err
	}
	return head[0] & 0x0F, payload, nil
}
