package chattest

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// Protocol is what a fan-out benchmark needs to know of a step.
type Protocol struct {
	Serve func(context.Context, net.Listener) error
	// Join enters the room on conn as client i; it returns the client's
	// name, once the server has said the client is in.
	Join func(conn net.Conn, in *bufio.Reader, i int) (string, error)
	// Says is the line that carries text from the client called name.
	Says func(name, text string) string
}

// FanOut measures delivery: clients connected, senders of them sending
// perSender lines of about 64 bytes each per b.N, each as fast as its own
// echoes come back (at most 64 unanswered). Every line must reach every
// client. With naive set, the server's connections write one line per
// system call: the same server, without batched writes.
func FanOut(b *testing.B, p Protocol, clients, senders, perSender int, naive bool) {
	deliver(b, p, serveInProcess(b, p, naive), clients, senders, perSender, 0, nil)
}

// ServerCPU is FanOut against the step's program in a child process, run
// with args, and also reports the CPU time the server spent per delivery.
func ServerCPU(b *testing.B, p Protocol, args []string, clients, senders, perSender int) {
	server := StartProcess(b, args...)
	deliver(b, p, server.Addr, clients, senders, perSender, 0, server.CPU)
}

// Steady measures latency at a steady rate: senders of the clients each
// send one line every pace, perSender lines per b.N. With 100 clients, 10
// senders and a pace of 10ms, that is 100,000 deliveries a second.
func Steady(b *testing.B, p Protocol, clients, senders, perSender int, pace time.Duration) {
	deliver(b, p, serveInProcess(b, p, false), clients, senders, perSender, pace, nil)
}

// serveInProcess runs p.Serve until the benchmark ends, and returns its
// address. With naive set, its connections write one line per system call.
func serveInProcess(b *testing.B, p Protocol, naive bool) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	if naive {
		return StartOn(b, naiveListener{ln}, p.Serve)
	}
	return StartOn(b, ln, p.Serve)
}

// deliver is FanOut, Steady and ServerCPU, against the server at addr:
// flooding when pace is 0, and reporting the server's CPU time per
// delivery when serverCPU is not nil.
func deliver(b *testing.B, p Protocol, addr string, clients, senders, perSender int, pace time.Duration, serverCPU func() time.Duration) {
	conns := make([]net.Conn, clients)
	names := make([]string, clients)
	readers := make([]*bufio.Reader, clients)
	for i := range conns {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		conns[i], readers[i] = c, bufio.NewReaderSize(c, 64<<10)
		if names[i], err = p.Join(c, readers[i], i); err != nil {
			b.Fatal(err)
		}
	}
	// Let the arrivals reach everyone before the clock starts.
	if _, err := fmt.Fprintf(conns[clients-1], "ready\n"); err != nil {
		b.Fatal(err)
	}
	for i := range clients {
		if err := conns[i].SetReadDeadline(time.Now().Add(Timeout)); err != nil {
			b.Fatal(err)
		}
		if err := readUntil(readers[i], p.Says(names[clients-1], "ready")); err != nil {
			b.Fatal(err)
		}
	}

	var latencies []time.Duration
	var cpu time.Duration
	deliveries := b.N * perSender * senders * clients
	MeasureDeliveries(b, deliveries, func() (err error) {
		if serverCPU != nil {
			cpu -= serverCPU()
			defer func() { cpu += serverCPU() }()
		}
		latencies, err = flood(conns, readers, senders, b.N*perSender, pace)
		return err
	})
	if serverCPU != nil {
		b.ReportMetric(float64(cpu.Nanoseconds())/float64(deliveries), "server-CPU-ns/delivery")
	}
	if len(latencies) > 0 {
		b.ReportMetric(float64(latencies[len(latencies)/2].Microseconds()), "p50-µs")
		b.ReportMetric(float64(latencies[len(latencies)*99/100].Microseconds()), "p99-µs")
	}
}

// flood is deliver's timed part: a reader per client, counting lines and
// sampling their latency, and the senders, each sending perSender lines,
// as fast as their echoes allow, or one every pace. It returns the
// latencies, sorted.
func flood(conns []net.Conn, readers []*bufio.Reader, senders, perSender int, pace time.Duration) ([]time.Duration, error) {
	const window = 64
	total := perSender * senders // lines every client must receive
	echoes := make([]atomic.Int64, senders)
	wake := make([]chan struct{}, senders)
	for i := range wake {
		wake[i] = make(chan struct{}, 1)
	}
	latencies := make([][]time.Duration, len(conns))
	var failed FirstError
	padding := strings.Repeat("x", 40)
	var readersDone sync.WaitGroup
	for i := range conns {
		readersDone.Go(func() {
			for got := 0; got < total; {
				if err := conns[i].SetReadDeadline(time.Now().Add(Timeout)); err != nil {
					failed.Set(err)
					return
				}
				line, err := readers[i].ReadSlice('\n')
				if err != nil {
					failed.Set(fmt.Errorf("client %d after %d of %d lines: %w", i, got, total, err))
					return
				}
				_, text, ok := bytes.Cut(line, []byte("|"))
				if !ok {
					continue // an arrival or the like
				}
				got++
				fields := bytes.Fields(text)
				if got%16 == 0 { // sample the latency
					sent, _ := strconv.ParseInt(string(fields[1]), 10, 64)
					latencies[i] = append(latencies[i], time.Since(time.Unix(0, sent)))
				}
				if i < senders && string(fields[0]) == strconv.Itoa(i) {
					echoes[i].Add(1)
					select {
					case wake[i] <- struct{}{}:
					default:
					}
				}
			}
		})
	}
	var sendersDone sync.WaitGroup
	for i := range senders {
		sendersDone.Go(func() {
			if pace > 0 {
				failed.Set(sendPaced(conns[i], i, perSender, pace, padding))
				return
			}
			var buf []byte
			for sent := 0; sent < perSender; {
				for int64(sent)-echoes[i].Load() >= window {
					select {
					case <-wake[i]:
					case <-time.After(Timeout):
						failed.Set(fmt.Errorf("sender %d: no echo for %v", i, Timeout))
						return
					}
				}
				buf = buf[:0]
				for n := int64(sent) - echoes[i].Load(); n < window && sent < perSender; n++ {
					buf = fmt.Appendf(buf, "|%d %d %s\n", i, time.Now().UnixNano(), padding)
					sent++
				}
				if _, err := conns[i].Write(buf); err != nil {
					failed.Set(err)
					return
				}
			}
		})
	}
	sendersDone.Wait()
	readersDone.Wait()
	all := slices.Concat(latencies...)
	slices.Sort(all)
	return all, failed.Err()
}

// sendPaced sends perSender lines on conn, one every pace.
func sendPaced(conn net.Conn, sender, perSender int, pace time.Duration, padding string) error {
	tick := time.NewTicker(pace)
	defer tick.Stop()
	for range perSender {
		<-tick.C
		if _, err := fmt.Fprintf(conn, "|%d %d %s\n", sender, time.Now().UnixNano(), padding); err != nil {
			return err
		}
	}
	return nil
}

// FirstError keeps the first error that any of several goroutines reports.
// (atomic.Value would panic on errors of different types.)
type FirstError struct {
	mu  sync.Mutex
	err error
}

// Set records err if it is the first error; nil is ignored.
func (f *FirstError) Set(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err == nil {
		f.err = err
	}
}

func (f *FirstError) Err() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.err
}

// MeasureDeliveries times run, which makes the given number of
// deliveries, and reports deliveries per second, and nanoseconds and
// allocated bytes per delivery.
func MeasureDeliveries(b *testing.B, deliveries int, run func() error) {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	b.ResetTimer()
	start := time.Now()
	err := run()
	elapsed := time.Since(start)
	b.StopTimer()
	runtime.ReadMemStats(&after)
	if err != nil {
		b.Fatal(err)
	}
	n := float64(deliveries)
	b.ReportMetric(n/elapsed.Seconds(), "deliveries/s")
	b.ReportMetric(float64(elapsed.Nanoseconds())/n, "ns/delivery")
	b.ReportMetric(float64(after.TotalAlloc-before.TotalAlloc)/n, "B/delivery")
}

func readUntil(in *bufio.Reader, want string) error {
	for {
		line, err := in.ReadString('\n')
		if err != nil {
			return err
		}
		if strings.TrimSuffix(line, "\n") == want {
			return nil
		}
	}
}

// naiveListener's connections write each line with a system call of its
// own, as a server without batched writes would.
type naiveListener struct{ net.Listener }

func (l naiveListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	return naiveConn{c}, err
}

type naiveConn struct{ net.Conn }

func (c naiveConn) Write(p []byte) (int, error) {
	n := 0
	for line := range bytes.Lines(p) {
		m, err := c.Conn.Write(line)
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// IdleMemory runs the step's program, has n clients join it with
// join(addr, i), wave clients at a time, and reports the program's
// resident memory per idle client, and how long the n joins took. With
// wave equal to n they all join at once; in smaller waves they arrive as
// they would over the course of a day, and no burst of arrivals inflates
// the memory (Go keeps the heap a burst made it grow to). The clients read
// nothing after joining, so that the server, not they, has the two cores;
// they dial with BigBuffers, so what the server sends them fits in their
// sockets, as if they read it on machines of their own.
//
// With -short (CI runs every benchmark once that way, so none can rot)
// at most 1,000 clients join, in waves no larger: the figures are then
// not those of docs/performance.md, and a loaded machine cannot fail them.
func IdleMemory(b *testing.B, n, wave int, args []string, join func(addr string, i int) (io.Closer, error)) {
	if testing.Short() {
		n, wave = min(n, 1000), min(wave, 1000)
	}
	p := StartProcess(b, args...)
	before, cpuBefore := p.RSS(), p.CPU()
	conns := make([]io.Closer, n)
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	}()
	b.ResetTimer()
	start := time.Now()
	var err error
	for first := 0; first < n && err == nil; first += wave {
		err = Concurrently(min(wave, n-first), func(i int) (err error) {
			conns[first+i], err = join(p.Addr, first+i)
			return err
		})
	}
	joined, cpu := time.Since(start), p.CPU()-cpuBefore
	b.StopTimer()
	if err != nil {
		b.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond) // a measurement pause, not synchronisation: let RSS settle
	b.ReportMetric(float64(p.RSS()-before)/float64(n), "RSS-B/client")
	b.ReportMetric(joined.Seconds(), "s-to-join-all")
	b.ReportMetric(cpu.Seconds(), "server-CPU-s")
}

// BigBuffers is a dialer whose connections can hold 1 MiB that they have
// not read yet (the kernel's net.core.rmem_max allowing).
var BigBuffers = &net.Dialer{
	Timeout: Timeout,
	Control: func(_, _ string, c syscall.RawConn) error {
		var err error
		if cerr := c.Control(func(fd uintptr) {
			err = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 1<<20)
		}); cerr != nil {
			return cerr
		}
		return err
	},
}

// TCPJoin dials addr with BigBuffers and joins with f, within 3*Timeout.
func TCPJoin(f func(conn net.Conn, in *bufio.Reader, i int) error) func(addr string, i int) (io.Closer, error) {
	return func(addr string, i int) (io.Closer, error) {
		c, err := BigBuffers.Dial("tcp", addr)
		if err != nil {
			return nil, err
		}
		if err := c.SetDeadline(time.Now().Add(3 * Timeout)); err != nil {
			return c, err
		}
		return c, f(c, bufio.NewReaderSize(c, 256), i)
	}
}

// CPU is the CPU time (user and system) the process has used, from /proc
// (Linux), to the kernel's clock tick (usually 10ms).
func (p *Process) CPU() time.Duration {
	p.t.Helper()
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.cmd.Process.Pid))
	if err != nil {
		p.t.Fatal(err)
	}
	// The fields after the command's name, which is in parentheses (and
	// may hold some): state is field 3, utime 14 and stime 15.
	fields := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
	var ticks int64
	for _, f := range fields[11:13] {
		n, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			p.t.Fatal(err)
		}
		ticks += n
	}
	const ticksPerSecond = 100 // USER_HZ, 100 on Linux
	return time.Duration(ticks) * time.Second / ticksPerSecond
}

// RSS is the process's resident memory in bytes, from /proc (Linux).
func (p *Process) RSS() int64 {
	p.t.Helper()
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		p.t.Fatal(err)
	}
	for line := range strings.Lines(string(status)) {
		if kb, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, err := strconv.ParseInt(strings.Fields(kb)[0], 10, 64)
			if err != nil {
				p.t.Fatal(err)
			}
			return n << 10
		}
	}
	p.t.Fatal("no VmRSS in /proc status")
	return 0
}
