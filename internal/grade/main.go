// Command grade grades several students' servers against one step's tests
// and prints a table: one row per behaviour (test), one column per student,
// and each student's total.
//
//	go run ./internal/grade -step step4-exit-queue alice='python3 alice/chat.py' bob=./bob/chat
//
// Each server is graded as CHAT_CMD grades it (see the README's classroom
// mode): `go test -json` runs the step's tests, which start the student's
// program for every test. The commands run in the current directory.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
)

func main() {
	step := flag.String("step", "", "the step whose tests grade the servers, e.g. step4-exit-queue")
	short := flag.Bool("short", false, "skip the slowest tests (go test -short)")
	run := flag.String("run", "", "grade only the tests matching this regular expression (go test -run)")
	verbose := flag.Bool("v", false, "print each failure's message under the table")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: go run ./internal/grade -step <step> [-short] [-run regexp] [-v] name='command' ...\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if *step == "" || flag.NArg() == 0 {
		flag.Usage()
		os.Exit(2)
	}
	var students []student
	for _, arg := range flag.Args() {
		name, cmd, ok := strings.Cut(arg, "=")
		if !ok || name == "" || cmd == "" {
			fmt.Fprintf(os.Stderr, "grade: %q is not name='command'\n", arg)
			os.Exit(2)
		}
		students = append(students, student{name, cmd})
	}
	dir, err := os.Getwd()
	if err != nil {
		fmt.Fprintln(os.Stderr, "grade:", err)
		os.Exit(1)
	}
	var args []string
	if *short {
		args = append(args, "-short")
	}
	if *run != "" {
		args = append(args, "-run", *run)
	}
	var reports []*report
	for _, s := range students {
		fmt.Fprintf(os.Stderr, "grading %s (%s)...\n", s.name, s.cmd)
		r, err := grade("./"+filepath.Clean(*step), s.cmd, dir, args...)
		if err != nil {
			fmt.Fprintf(os.Stderr, "grade: %s: %v\n", s.name, err)
			os.Exit(1)
		}
		reports = append(reports, r)
	}
	printTable(os.Stdout, students, reports)
	if *verbose {
		for i, r := range reports {
			for _, test := range r.order {
				if r.results[test].outcome == failed {
					fmt.Printf("\n%s, %s:\n%s", students[i].name, test, r.results[test].output)
				}
			}
		}
	}
}

type student struct{ name, cmd string }

// outcome is what one test made of one server.
type outcome string

const (
	passed     outcome = "pass"
	failed     outcome = "FAIL"
	skipped    outcome = "skip"
	ungraded   outcome = "pass?" // passed without talking to the server: a defect of the test
	unfinished outcome = "?"     // no result: the run was cut short
)

type result struct {
	outcome outcome
	output  string // what the test printed: the failure's message
}

// report is one server's results, by test name, in the order they ran.
type report struct {
	order   []string
	results map[string]*result
	tail    string // what the test binary printed outside any test
}

// event is one line of go test -json (cmd/test2json).
type event struct {
	Action string
	Test   string
	Output string
}

// gradedMark is the line chattest logs in every test that talks to the
// server under test (internal/chattest's gradedMark).
const gradedMark = "chattest: grading your server:"

// grade runs the tests of the step in pkg against the program cmd,
// started in dir, and returns what each test made of it.
func grade(pkg, cmd, dir string, args ...string) (*report, error) {
	goTest := exec.Command("go", append([]string{"test", "-json", "-count=1"}, append(args, pkg)...)...)
	goTest.Env = append(os.Environ(), "CHAT_CMD="+cmd, "CHAT_DIR="+dir, "CHAT_ADDR=")
	var stderr bytes.Buffer
	goTest.Stderr = &stderr
	out, err := goTest.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := goTest.Start(); err != nil {
		return nil, err
	}
	r, parseErr := parse(out)
	err = goTest.Wait()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) { // a failing test exits 1: that is a grade
		return nil, err
	}
	if parseErr != nil {
		return nil, parseErr
	}
	if len(r.order) == 0 {
		return nil, fmt.Errorf("no test ran: %s%s", stderr.String(), r.tail)
	}
	return r, nil
}

// parse reads go test -json's events.
func parse(in io.Reader) (*report, error) {
	r := &report{results: map[string]*result{}}
	var tail strings.Builder
	scanner := bufio.NewScanner(in)
	scanner.Buffer(nil, 16<<20)
	for scanner.Scan() {
		var e event
		if err := json.Unmarshal(scanner.Bytes(), &e); err != nil {
			return nil, fmt.Errorf("go test -json: %w: %q", err, scanner.Text())
		}
		if e.Test == "" {
			if e.Action == "output" {
				tail.WriteString(e.Output)
			}
			continue
		}
		res := r.results[e.Test]
		if res == nil {
			res = &result{outcome: unfinished}
			r.results[e.Test] = res
			r.order = append(r.order, e.Test)
		}
		switch e.Action {
		case "output":
			if !strings.HasPrefix(strings.TrimSpace(e.Output), "=== ") && !strings.HasPrefix(strings.TrimSpace(e.Output), "--- ") {
				res.output += e.Output
			}
		case "pass":
			res.outcome = passed
		case "fail":
			res.outcome = failed
		case "skip":
			res.outcome = skipped
		}
	}
	r.tail = tail.String()
	// A test passed ungraded if neither it nor a test it is part of (the
	// one that started the server its subtests share) talked to a server.
	for test, res := range r.results {
		if res.outcome != passed {
			continue
		}
		graded := false
		for name := test; name != "" && !graded; {
			if up := r.results[name]; up != nil && strings.Contains(up.output, gradedMark) {
				graded = true
			}
			name, _ = cutLast(name, "/")
		}
		if !graded {
			res.outcome = ungraded
		}
	}
	// A test with subtests is graded by its subtests.
	r.order = slices.DeleteFunc(r.order, func(test string) bool {
		return slices.ContainsFunc(r.order, func(sub string) bool { return strings.HasPrefix(sub, test+"/") })
	})
	return r, scanner.Err()
}

// cutLast returns s before and after the last sep, or "" and false.
func cutLast(s, sep string) (string, bool) {
	i := strings.LastIndex(s, sep)
	if i < 0 {
		return "", false
	}
	return s[:i], true
}

// printTable prints one row per test and one column per student, then the
// totals: tests passed of those graded, and how many were skipped.
func printTable(w io.Writer, students []student, reports []*report) {
	var tests []string
	for _, r := range reports {
		for _, test := range r.order {
			if !slices.Contains(tests, test) {
				tests = append(tests, test)
			}
		}
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprint(tw, "behaviour")
	for _, s := range students {
		fmt.Fprintf(tw, "\t%s", s.name)
	}
	fmt.Fprintln(tw)
	for _, test := range tests {
		fmt.Fprint(tw, test)
		for _, r := range reports {
			cell := "-"
			if res := r.results[test]; res != nil {
				cell = string(res.outcome)
			}
			fmt.Fprintf(tw, "\t%s", cell)
		}
		fmt.Fprintln(tw)
	}
	fmt.Fprint(tw, "total: passed/graded (skipped)")
	for _, r := range reports {
		pass, graded, skip := r.totals()
		fmt.Fprintf(tw, "\t%d/%d (%d)", pass, graded, skip)
	}
	fmt.Fprintln(tw)
	tw.Flush()
	for _, test := range tests {
		for _, r := range reports {
			if res := r.results[test]; res != nil && res.outcome == ungraded {
				fmt.Fprintf(w, "pass? %s passed without talking to the server under test: a defect of the test, not counted\n", test)
				return
			}
		}
	}
}

// totals counts the tests passed and graded (passed or failed), and those
// skipped.
func (r *report) totals() (pass, graded, skip int) {
	for _, test := range r.order {
		switch r.results[test].outcome {
		case passed:
			pass++
			graded++
		case failed, unfinished:
			graded++
		case skipped:
			skip++
		}
	}
	return pass, graded, skip
}
