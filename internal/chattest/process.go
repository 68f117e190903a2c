package chattest

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// runMainEnv, when set, makes a step's test binary run the step's main()
// instead of its tests: StartProcess uses it to test the real program
// (flags, signals, exit code) without building it separately.
const runMainEnv = "CHATTEST_RUN_MAIN"

// Main is a step's TestMain: it runs the step's main() when StartProcess
// asked for it, and otherwise runs the tests and checks that they leave no
// goroutine behind.
//
// While the tests run, what the servers in this process log (the log
// package's standard logger) is kept in memory, and printed only if the
// run fails or with -v. Many tests make the server log on purpose (a
// failing Accept, a client dropped for not reading), so in a passing run
// those lines are noise that looks like trouble.
func Main(m *testing.M, main func()) {
	if os.Getenv(runMainEnv) == "1" {
		main() // the real program: it logs to stderr as usual
		os.Exit(0)
	}
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	logs := &serverLog{}
	log.SetOutput(logs)
	code := m.Run()
	if code == 0 {
		// Idle keep-alive connections to a server the tests did not stop
		// (classroom mode) are not leaks: close them before looking.
		http.DefaultClient.CloseIdleConnections()
		// As goleak.VerifyTestMain does.
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: Errors on successful test run: %v\n", err)
			code = 1
		}
	}
	log.SetOutput(os.Stderr)
	if code != 0 || testing.Verbose() {
		logs.print(os.Stderr)
	}
	return code
}

// serverLog keeps the first maxServerLog bytes logged, and counts the rest.
type serverLog struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	dropped int
}

const maxServerLog = 4 << 20

func (l *serverLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.buf.Len()+len(p) > maxServerLog {
		l.dropped += len(p)
	} else {
		l.buf.Write(p)
	}
	return len(p), nil
}

func (l *serverLog) print(w io.Writer) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.buf.Len() == 0 {
		return
	}
	fmt.Fprintf(w, "\n--- The servers in this test process logged these lines (all tests, in order).\n"+
		"--- Many tests make a server log on purpose (accept errors, clients dropped\n"+
		"--- for not reading): a line here is not in itself a failure.\n%s", l.buf.Bytes())
	if l.dropped > 0 {
		fmt.Fprintf(w, "--- (and %d bytes more, not kept)\n", l.dropped)
	}
	fmt.Fprintf(w, "--- end of the servers' log\n")
}

// Process is the step's program, running as a child process.
type Process struct {
	t      testing.TB
	cmd    *exec.Cmd
	Addr   string        // from its "listening on" log line
	Stdout *bufio.Reader // what it prints on standard output
	exited chan error    // receives cmd.Wait's result once
	waited bool          // Stop has received it
}

var listening = regexp.MustCompile(`listening on (?:http://)?(\S+?)/?$`)

// StartProcess runs the step's main() with args in a child process and
// waits for it to log "listening on <addr>". The process is killed when the
// test ends if it is still running.
func StartProcess(t testing.TB, args ...string) *Process {
	t.Helper()
	InProcess(t)
	cmd := MainCommand(args...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &Process{t: t, cmd: cmd, Stdout: bufio.NewReader(stdout), exited: make(chan error, 1)}
	addr := make(chan string, 1)
	go func() {
		// Read stderr to the end, so the child never blocks on logging.
		logs := bufio.NewScanner(stderr)
		for logs.Scan() {
			t.Logf("server log: %s", logs.Text())
			if m := listening.FindStringSubmatch(strings.TrimSpace(logs.Text())); m != nil {
				select {
				case addr <- m[1]:
				default:
				}
			}
		}
		p.exited <- cmd.Wait()
	}()
	t.Cleanup(func() {
		if !p.waited {
			_ = cmd.Process.Kill() // already gone is fine too
			<-p.exited
		}
	})
	select {
	case p.Addr = <-addr:
	case <-time.After(Timeout):
		t.Fatalf("the server did not log \"listening on <addr>\" within %v", Timeout)
	}
	return p
}

// Stop sends sig to the process and returns its exit code, failing the test
// if it does not exit within limit.
func (p *Process) Stop(sig syscall.Signal, limit time.Duration) int {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatalf("signal %v: %v", sig, err)
	}
	select {
	case <-p.exited:
		p.waited = true
		return p.cmd.ProcessState.ExitCode()
	case <-time.After(limit):
		p.t.Fatalf("the server did not exit within %v of %v", limit, sig)
		return -1
	}
}

// MainCommand is the step's main() with args, as a command to run: for
// programs that never log "listening on", such as netcat.
func MainCommand(args ...string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), runMainEnv+"=1")
	return cmd
}
