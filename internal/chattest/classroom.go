package chattest

// Classroom mode: the step's tests grade a server that is not this
// repository's own, written by a student in any language.
//
//   - CHAT_CMD='python3 /abs/chat.py': the tests start the student's
//     program themselves, a fresh one for every test, as
//     sh -c "exec $CHAT_CMD -addr 127.0.0.1:PORT" plus the flags the test
//     needs (-idle 300ms, -history 3), in the directory CHAT_DIR (default:
//     the step's), and stop it when the test ends (startStudent, in
//     process.go). Every behaviour can be graded: idle timeouts, signals,
//     the exit status, and in step 1 what it prints.
//   - CHAT_ADDR=host:port: the tests grade a server that is already
//     running. They share it, so they run one at a time, and a test that
//     needs a server of its own (flags, a signal) is skipped, saying why.
//
// In both, a test that checks the repository's own code instead of the
// server under test is skipped (OwnCode, InProcess), every test run is
// counted, and Main ends the run with one line: how many behaviours were
// graded, passed, failed and were skipped. A run that graded nothing fails.

import (
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// ClassroomCmd is the command that starts the server under test
// (CHAT_CMD), or "".
func ClassroomCmd() string { return os.Getenv("CHAT_CMD") }

// ClassroomAddr is the address of an already running server under test
// (CHAT_ADDR), or "". CHAT_CMD, when set too, wins.
func ClassroomAddr() string {
	if ClassroomCmd() != "" {
		return ""
	}
	return os.Getenv("CHAT_ADDR")
}

// Classroom reports whether the tests grade a server other than the
// repository's own (CHAT_CMD or CHAT_ADDR is set).
func Classroom() bool { return ClassroomCmd() != "" || ClassroomAddr() != "" }

// mode names the classroom mode in skip messages.
func mode() string {
	if cmd := ClassroomCmd(); cmd != "" {
		return fmt.Sprintf("CHAT_CMD=%q", cmd)
	}
	return fmt.Sprintf("CHAT_ADDR=%s", ClassroomAddr())
}

// InProcess skips t in classroom mode: it needs the server in this process
// (a goroutine count, a fake clock, a listener that fails on purpose).
func InProcess(t testing.TB) {
	t.Helper()
	if Classroom() {
		count(t)
		t.Skipf("classroom mode (%s): this test needs the reference server inside the test process", mode())
	}
}

// OwnCode skips t in classroom mode: t checks a function of this
// repository's own step, not the server under test, so there it would
// pass without grading anything.
func OwnCode(t testing.TB) {
	t.Helper()
	if Classroom() {
		count(t)
		t.Skipf("classroom mode (%s): this test checks the reference code, not your server", mode())
	}
}

// Own skips t in CHAT_ADDR mode, where the server is shared and already
// running: t needs a server of its own, started for it (to signal it, or
// with other flags). what says what is then not graded.
func Own(t testing.TB, what string) {
	t.Helper()
	if addr := ClassroomAddr(); addr != "" {
		count(t)
		t.Skipf("CHAT_ADDR=%s: not graded (%s): this test starts a server of its own; use CHAT_CMD to grade it", addr, what)
	}
}

// The tally of the behaviours (tests and subtests) run in classroom mode:
// every test that asks for the server under test (Start, StartWith,
// StartProcess) or is skipped by InProcess, OwnCode or Own is counted once,
// when it ends.
var tally struct {
	sync.Mutex
	seen                            map[testing.TB]bool
	passed, failed, skipped, unsure int
	down                            string // CHAT_ADDR: why the shared server is gone
	reached                         bool   // CHAT_ADDR: it has accepted a connection
}

func count(t testing.TB) {
	if !Classroom() {
		return
	}
	tally.Lock()
	defer tally.Unlock()
	if tally.seen == nil {
		tally.seen = map[testing.TB]bool{}
	}
	if tally.seen[t] {
		return
	}
	tally.seen[t] = true
	t.Cleanup(func() { // registered first, so it runs after the server has stopped
		tally.Lock()
		defer tally.Unlock()
		switch {
		case t.Skipped():
			tally.skipped++
		case t.Failed():
			tally.failed++
		default:
			tally.passed++
		}
	})
}

// graded marks t as a test that talks to the server under test, and logs
// the mark that the table of internal/grade looks for.
func graded(t testing.TB, how string) {
	t.Helper()
	count(t)
	t.Logf("%s %s", gradedMark, how)
}

// gradedMark starts the log line of every test that is graded against the
// server under test (go test -v, -json): internal/grade reads it.
const gradedMark = "chattest: grading your server:"

// summary is the last line of a classroom run; ok is false if nothing was
// graded.
func summary(w io.Writer) (ok bool) {
	tally.Lock()
	defer tally.Unlock()
	graded := tally.passed + tally.failed
	behaviours := "behaviours"
	if graded == 1 {
		behaviours = "behaviour"
	}
	fmt.Fprintf(w, "classroom mode (%s): %d %s graded: %d passed, %d failed; %d skipped, not graded in this mode (go test -v says why)\n",
		mode(), graded, behaviours, tally.passed, tally.failed, tally.skipped)
	if tally.down != "" {
		fmt.Fprintf(w, "classroom mode: %s\n", tally.down)
	}
	if graded == 0 {
		fmt.Fprintf(w, "classroom mode: FAIL: nothing was graded\n")
		return false
	}
	return true
}

// shared returns CHAT_ADDR for a test that can share the running server,
// or skips t if that server has stopped accepting connections.
func shared(t testing.TB) string {
	t.Helper()
	addr := ClassroomAddr()
	count(t)
	tally.Lock()
	down := tally.down
	tally.Unlock()
	if down != "" {
		t.Skipf("not graded: %s", down)
	}
	if err := probe(addr); err != nil {
		why := sharedDown(t, err)
		t.Fatal(why)
	}
	tally.Lock()
	tally.reached = true
	tally.Unlock()
	forgetPeers() // a new test: the clients so far belong to earlier ones
	t.Logf("%s CHAT_ADDR=%s", gradedMark, addr)
	return addr
}

// sharedDown records that the server at CHAT_ADDR no longer accepts
// connections, and returns the message that says so, once.
func sharedDown(t testing.TB, err error) string {
	tally.Lock()
	defer tally.Unlock()
	if tally.down != "" {
		return tally.down
	}
	if tally.reached {
		tally.down = fmt.Sprintf("your server at %s stopped accepting connections during %s (%v): did it crash? The tests after it are skipped", ClassroomAddr(), t.Name(), err)
	} else {
		tally.down = fmt.Sprintf("your server at %s does not accept connections (%v): is it running, and listening there? The other tests are skipped", ClassroomAddr(), err)
	}
	return tally.down
}

// probe dials addr once and hangs up.
func probe(addr string) error {
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	return conn.Close()
}

// gone explains a failed read or dial of a client of the server at addr
// when the reason is that the server is gone: a CHAT_CMD process that has
// exited (its status and last lines of output), or a CHAT_ADDR server that
// no longer accepts connections. With wait, it gives a CHAT_CMD process a
// moment to exit. It returns "" if the server is still there, or is the
// repository's own.
func gone(t testing.TB, addr string, wait bool) string {
	if p, ok := processes.Load(addr); ok {
		p := p.(*Process)
		select {
		case <-p.done:
		default:
			if !wait {
				return ""
			}
		}
		return p.crashed()
	}
	if addr != "" && addr == ClassroomAddr() {
		if err := probe(addr); err != nil {
			return sharedDown(t, err)
		}
	}
	return ""
}

// processes maps the address of each CHAT_CMD server running to its
// *Process.
var processes sync.Map

// shellQuote quotes s for sh, if it needs it.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:/=") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
