package chattest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"testing/iotest"
	"time"

	"go.uber.org/goleak"
)

// runMainEnv, when set, makes a step's test binary run the step's main()
// instead of its tests: StartProcess uses it to test the real program
// (flags, signals, exit code) without building it separately.
const runMainEnv = "CHATTEST_RUN_MAIN"

// Main is a step's TestMain: it runs the step's main() when StartProcess
// asked for it, and otherwise runs the tests and checks that they leave no
// goroutine behind. In classroom mode it ends with a line that counts the
// behaviours graded, passed, failed and skipped, and fails a run that
// graded nothing.
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
	// Keep-alive connections of http.DefaultClient (step 5's page tests)
	// to a server that is still running (CHAT_ADDR's) are not leaks.
	http.DefaultClient.CloseIdleConnections()
	if code == 0 {
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
	if Classroom() && !summary(os.Stdout) {
		code = 1
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

// Process is the step's program, running as a child process: the
// repository's own (its main()), or in CHAT_CMD mode the student's.
type Process struct {
	t       testing.TB
	cmd     *exec.Cmd
	student bool          // CHAT_CMD's program, in a process group of its own
	Addr    string        // where it listens
	Stdout  *bufio.Reader // what it prints on standard output (not CHAT_CMD's)
	done    chan struct{} // closed once cmd.Wait has returned

	// Printed is what a student's program prints on standard output, one
	// line at a time, when the test asked for it (StartPrinter).
	Printed <-chan string
	printed chan string
	quit    chan struct{} // closed when the test ends: stop handing lines over

	mu       sync.Mutex
	stderr   []string // its last lines on standard error (CHAT_CMD: and output)
	stopped  bool     // the test signalled it: an exit is no crash
	reported bool     // its crash has been told
}

var listening = regexp.MustCompile(`listening on (?:http://)?(\S+?)/?$`)

// StartProcess runs the step's program with args in a child process, and
// returns once it listens. The process is stopped when the test ends if it
// is still running.
//
// The repository's own program is the step's main(), and StartProcess
// waits for its "listening on <addr>" log line. In CHAT_CMD mode it is the
// student's program, run as sh -c "exec $CHAT_CMD <args>" with the -addr of
// port 0 replaced by a free port, and StartProcess waits until something
// listens on that port. With CHAT_ADDR, t is skipped: the server is not
// the tests' to start.
func StartProcess(t testing.TB, args ...string) *Process {
	t.Helper()
	if ClassroomCmd() != "" {
		return startStudent(t, args, false)
	}
	Own(t, "the program itself: its log line, signals and exit status")
	p := launch(t, MainCommand(args...), false, false)
	addr := make(chan string, 1)
	go func() {
		for {
			select {
			case <-p.done:
				return
			case <-time.After(10 * time.Millisecond): // polling, bounded by Timeout below
			}
			if m := p.logged(listening); m != nil {
				addr <- m[1]
				return
			}
		}
	}()
	select {
	case p.Addr = <-addr:
	case <-p.done:
		t.Fatalf("the server %s before it logged \"listening on <addr>\"%s", p.status(), p.lastLines())
	case <-time.After(Timeout):
		t.Fatalf("the server did not log \"listening on <addr>\" within %v", Timeout)
	}
	return p
}

// startStudent runs CHAT_CMD with args, on a free port if args ask for
// port 0 (or give no -addr), and waits until something listens there.
//
// With printed, what the program prints on standard output is kept apart,
// one line at a time, in p.Printed (step 1's tests read it).
func startStudent(t testing.TB, args []string, printed bool) *Process {
	t.Helper()
	return startStudentTry(t, args, printed, 1)
}

func startStudentTry(t testing.TB, given []string, printed bool, try int) *Process {
	t.Helper()
	count(t)
	args := slices.Clone(given)
	i := slices.Index(args, "-addr")
	picked := true // the port is ours to choose
	switch {
	case i < 0:
		args = append([]string{"-addr", freeAddr(t)}, args...)
	case i+1 < len(args) && strings.HasSuffix(args[i+1], ":0"):
		args[i+1] = freeAddr(t)
	default:
		picked = false
	}
	addr := args[slices.Index(args, "-addr")+1]
	// exec: the program replaces sh, so that the signals and the exit
	// status are its own.
	line := "exec " + ClassroomCmd()
	for _, a := range args {
		line += " " + shellQuote(a)
	}
	cmd := exec.Command("sh", "-c", line)
	cmd.Dir = os.Getenv("CHAT_DIR")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // signals reach what sh starts
	p := launch(t, cmd, true, printed)
	p.Addr = addr
	deadline := time.Now().Add(Timeout)
	for {
		err := listens(addr)
		if err == nil {
			break
		}
		select {
		case <-p.done:
			p.mu.Lock()
			p.reported = true
			p.mu.Unlock()
			if ln, err := net.Listen("tcp", addr); err != nil && picked && try < 3 {
				// Another program took the port first: try another.
				t.Logf("%s was taken before your server could listen there (%v): trying another port", addr, err)
				return startStudentTry(t, given, printed, try+1)
			} else if err == nil {
				ln.Close()
			}
			t.Fatalf("your server (sh -c %s) %s before it listened on %s%s", shellQuote(line), p.status(), addr, p.lastLines())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("your server (sh -c %s) did not listen on %s within %v: %v%s", shellQuote(line), addr, Timeout, err, p.lastLines())
		}
		time.Sleep(20 * time.Millisecond) // polling, bounded by deadline
	}
	processes.Store(addr, p)
	t.Cleanup(func() { processes.Delete(addr) })
	graded(t, "sh -c "+shellQuote(line))
	return p
}

// listens reports whether a socket listens on addr's port, from the
// kernel's tables (/proc/net/tcp), without connecting: a connection would
// reach the server, and in step 2 be announced to the test's first
// clients. Where there is no /proc, it connects.
func listens(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	n, err := strconv.Atoi(port)
	if err != nil {
		return err
	}
	// Sockets that take connections to 127.0.0.1, as the kernel writes
	// their addresses: 127.0.0.1 and 0.0.0.0; ::ffff:127.0.0.1 and ::.
	// (Other programs may listen on the same port at other addresses,
	// such as [::1].)
	port = fmt.Sprintf(":%04X", n)
	want := map[string]bool{
		"0100007F" + port: true, "00000000" + port: true,
		"0000000000000000FFFF00000100007F" + port: true, strings.Repeat("0", 32) + port: true,
	}
	for _, table := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		data, err := os.ReadFile(table)
		if err != nil {
			return probe(addr)
		}
		for _, line := range strings.Split(string(data), "\n") {
			fields := strings.Fields(line)
			// sl, local_address (hex IP:port), rem_address, st (0A: LISTEN)
			if len(fields) > 3 && want[fields[1]] && fields[3] == "0A" {
				return nil
			}
		}
	}
	return fmt.Errorf("nothing listens on %s yet", addr)
}

// freeAddr returns a 127.0.0.1 address with a port that was free a moment
// ago, for a program that must be told where to listen.
// Each is handed out once in this process, so that two tests starting
// programs at the same moment are never given the same port. The ports
// are below the kernel's range of ephemeral ports, which it gives to the
// outgoing connections of every program on the machine (thousands, in a
// load test), any of which could take a port in that range before the
// program binds it.
func freeAddr(t testing.TB) string {
	t.Helper()
	low := 32768
	if r, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(r)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil && n > 2048 {
				low = n
			}
		}
	}
	for range 100 {
		port := max(1024, low-10000) + rand.IntN(min(10000, low-1024))
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			continue
		}
		ln.Close()
		if _, taken := handedOut.LoadOrStore(addr, true); !taken {
			return addr
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// handedOut holds the addresses freeAddr has returned.
var handedOut sync.Map

// launch starts cmd, keeps its last lines on stderr, and stops it when the
// test ends: the student's with SIGTERM, then SIGKILL after a bound; the
// repository's own at once. A student's program that exited by itself
// before then is reported, once.
func launch(t testing.TB, cmd *exec.Cmd, student, printed bool) *Process {
	t.Helper()
	p := &Process{t: t, cmd: cmd, student: student, done: make(chan struct{})}
	var stderr io.Reader
	if student {
		// One pipe for both: what a student's program prints, on either,
		// is kept for the failure messages, and read so it never blocks.
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stdout, cmd.Stderr, stderr = w, w, r
		p.Stdout = bufio.NewReader(iotest.ErrReader(errors.New("CHAT_CMD: the program's standard output is read by Printed, or kept with its standard error")))
		defer w.Close() // the child has its own copy once started
		if printed {
			pr, pw, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			cmd.Stdout = pw
			defer pw.Close()
			p.printed, p.quit = make(chan string, 1024), make(chan struct{})
			p.Printed = p.printed
			go p.readPrinted(pr)
		}
		defer func() {
			if !p.running() {
				r.Close()
			}
		}()
	} else {
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		p.Stdout = bufio.NewReader(stdout)
		if stderr, err = cmd.StderrPipe(); err != nil {
			t.Fatal(err)
		}
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		// Read stderr to the end, so the child never blocks on logging.
		logs := bufio.NewScanner(stderr)
		logs.Buffer(nil, 1<<20)
		for logs.Scan() {
			if !student {
				t.Logf("server log: %s", logs.Text())
			}
			p.mu.Lock()
			p.stderr = append(p.stderr, logs.Text())
			if len(p.stderr) > 2*keptLines {
				p.stderr = slices.Delete(p.stderr, 0, keptLines)
			}
			p.mu.Unlock()
		}
		_, _ = io.Copy(io.Discard, stderr) // a line too long: drain the rest
		_ = cmd.Wait()
		if c, ok := stderr.(io.Closer); ok && student {
			c.Close()
		}
		close(p.done)
	}()
	t.Cleanup(func() {
		if p.quit != nil {
			defer close(p.quit)
		}
		select {
		case <-p.done:
			if why := p.crashed(); why != "" {
				t.Error(why)
			}
			return
		default:
		}
		p.mu.Lock()
		p.stopped = true
		p.mu.Unlock()
		if student {
			_ = p.signal(syscall.SIGTERM)
			select {
			case <-p.done:
				return
			case <-time.After(stopBound):
			}
		}
		_ = p.signal(syscall.SIGKILL) // already gone is fine too
		<-p.done
	})
	return p
}

// readPrinted hands each line the program prints on standard output to
// p.Printed, until the program has exited or the test has ended.
func (p *Process) readPrinted(r *os.File) {
	defer r.Close()
	defer close(p.printed)
	lines := bufio.NewScanner(r)
	lines.Buffer(nil, 1<<20)
	for lines.Scan() {
		select {
		case p.printed <- lines.Text():
		case <-p.quit:
			return
		}
	}
}

// running reports whether cmd has started.
func (p *Process) running() bool { return p.cmd.Process != nil }

// keptLines is how many of a program's last lines on stderr are kept, and
// told when it crashes.
const keptLines = 10

// stopBound is how long a student's program has to exit after SIGTERM when
// a test ends, before it is killed.
const stopBound = 3 * time.Second

// signal sends sig to the program: for the student's, to its whole
// process group, so that it reaches the program sh started.
func (p *Process) signal(sig syscall.Signal) error {
	if p.student {
		return syscall.Kill(-p.cmd.Process.Pid, sig)
	}
	return p.cmd.Process.Signal(sig)
}

// logged returns the submatches of the first line on stderr that matches
// re, or nil.
func (p *Process) logged(re *regexp.Regexp) []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, line := range p.stderr {
		if m := re.FindStringSubmatch(strings.TrimSpace(line)); m != nil {
			return m
		}
	}
	return nil
}

// ExpectLogged waits until the program has written a line matching re on
// standard error, and fails the test if it has not within Timeout.
func (p *Process) ExpectLogged(re *regexp.Regexp, what string) {
	p.t.Helper()
	deadline := time.Now().Add(Timeout)
	for p.logged(re) == nil {
		if time.Now().After(deadline) {
			p.t.Fatalf("expected your server to log %s on standard error (a line matching %q) within %v%s", what, re, Timeout, p.lastLines())
		}
		time.Sleep(10 * time.Millisecond) // polling, bounded by deadline
	}
}

// ExpectListening checks that the program has logged, on standard error,
// a line ending in "listening on <addr>" (step 5: "listening on
// http://<addr>/"), with the address it listens on.
func (p *Process) ExpectListening() {
	p.t.Helper()
	re := regexp.MustCompile(`listening on (?:http://)?` + regexp.QuoteMeta(p.Addr) + `/?$`)
	p.ExpectLogged(re, fmt.Sprintf("%q", "listening on "+p.Addr))
}

// status says how the program ended, once it has.
func (p *Process) status() string {
	st := p.cmd.ProcessState
	if ws, ok := st.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return fmt.Sprintf("was killed by signal %v", ws.Signal())
	}
	return fmt.Sprintf("exited with status %d", st.ExitCode())
}

// lastLines is the program's last lines on stderr, for a failure message.
func (p *Process) lastLines() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	lines := p.stderr[max(0, len(p.stderr)-keptLines):]
	if len(lines) == 0 {
		return "; it printed nothing"
	}
	return "; its last lines of output:\n\t" + strings.Join(lines, "\n\t")
}

// crashed waits a moment for the program to exit, and if it has, without
// being told to, says so, once: "" if it is running, was stopped by the
// test, or its crash has been told already.
func (p *Process) crashed() string {
	select {
	case <-p.done:
	case <-time.After(2 * time.Second): // a connection that ends first, then the exit
		return ""
	}
	p.mu.Lock()
	if p.stopped || p.reported {
		p.mu.Unlock()
		return ""
	}
	p.reported = true
	p.mu.Unlock()
	who := "the server"
	if p.student {
		who = "your server"
	}
	return fmt.Sprintf("%s %s during the test%s", who, p.status(), p.lastLines())
}

// Stop sends sig to the process and returns its exit code, failing the test
// if it does not exit within limit. A process killed by a signal has code -1.
func (p *Process) Stop(sig syscall.Signal, limit time.Duration) int {
	p.t.Helper()
	p.mu.Lock()
	p.stopped = true
	p.mu.Unlock()
	if err := p.signal(sig); err != nil {
		p.t.Fatalf("signal %v: %v", sig, err)
	}
	select {
	case <-p.done:
		if code := p.cmd.ProcessState.ExitCode(); code != 0 {
			p.t.Logf("on %v the server %s%s", sig, p.status(), p.lastLines())
		}
		return p.cmd.ProcessState.ExitCode()
	case <-time.After(limit):
		p.t.Fatalf("the server did not exit within %v of %v%s", limit, sig, p.lastLines())
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
