// wsclient is a minimal terminal client for steps 5 and 6: each line typed
// is sent as one WebSocket frame, {"body": line}, and each message the server sends is
// printed on a line of its own, as `author: body`, or `* event body` for a
// notice (a welcome's list of who is here follows it in brackets).
//
//	go run ./wsclient -addr localhost:8080
//
// When standard input ends (Ctrl-D), it closes the connection and exits;
// when the server hangs up, it exits at once.
package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strings"

	"golang.org/x/net/websocket"
)

// message is what the server's frames carry (docs/protocol.md).
type message struct {
	Author string   `json:"author,omitempty"`
	Body   string   `json:"body"`
	Event  string   `json:"event,omitempty"`
	Here   []string `json:"here,omitempty"`
}

func main() {
	addr := flag.String("addr", "localhost:8080", "chat server address")
	flag.Parse()
	ws, err := websocket.Dial("ws://"+*addr+"/ws", "", "http://"+*addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "wsclient:", err)
		os.Exit(1)
	}
	go func() { // typed lines to the server, one frame each: {"body": line}
		in := bufio.NewScanner(os.Stdin)
		for in.Scan() {
			if err := websocket.JSON.Send(ws, message{Body: in.Text()}); err != nil {
				break
			}
		}
		ws.Close() // which ends the loop below
	}()
	for {
		var batch []message // one frame: a JSON array of messages
		if err := websocket.JSON.Receive(ws, &batch); err != nil {
			if err != io.EOF && !errors.Is(err, net.ErrClosed) {
				fmt.Fprintln(os.Stderr, "wsclient:", err)
			}
			return
		}
		for _, m := range batch {
			fmt.Println(format(m))
		}
	}
}

// format is how m is printed.
func format(m message) string {
	switch {
	case m.Event == "welcome":
		return fmt.Sprintf("* welcome %s [here: %s]", m.Body, strings.Join(m.Here, ","))
	case m.Event != "":
		return "* " + m.Event + " " + m.Body
	default:
		return m.Author + ": " + m.Body
	}
}
