package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The step whose suite grades testdata/chat4.py, a step 4 server written in
// Python from docs/protocol.md alone. -short: without the thousand
// clients, which take a Python server half a minute.
const step = "../../step4-exit-queue"

// python returns the command that runs testdata/chat4.py, or skips t if
// python3 is missing, except in CI (CI=true), where it must be there.
func python(t *testing.T, script string) string {
	t.Helper()
	py, err := exec.LookPath("python3")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI=true but python3 is missing (.ci/run installs it): %v", err)
		}
		t.Skipf("python3 is missing, so no server in another language to grade: %v", err)
	}
	// The interpreter itself, not a wrapper such as pyenv's shim, which
	// takes most of a second to start it, for every test.
	if out, err := exec.Command(py, "-c", "import sys; print(sys.executable)").Output(); err == nil && len(out) > 1 {
		py = strings.TrimSpace(string(out))
	}
	abs, err := filepath.Abs(script)
	require.NoError(t, err)
	return py + " " + abs
}

// Every test of step 4's suite either grades the Python server (and it
// passes) or is skipped: none passes without talking to it.
func TestAPythonServerPassesStep4ThroughChatCmd(t *testing.T) {
	t.Parallel()
	r, err := grade(step, python(t, "testdata/chat4.py"), "", "-short")
	require.NoError(t, err)
	for _, test := range r.order {
		res := r.results[test]
		switch res.outcome {
		case passed, skipped:
		case ungraded:
			t.Errorf("%s passed without talking to the server under test: it must grade it, or be skipped in classroom mode\n%s", test, res.output)
		default:
			t.Errorf("%s: %s\n%s", test, res.outcome, res.output)
		}
	}
	pass, graded, skip := r.totals()
	t.Logf("%d of %d graded behaviours passed; %d skipped", pass, graded, skip)
	assert.GreaterOrEqual(t, graded, 30, "fewer behaviours graded than step 4 has")
}

// Each step's own program, graded as a student's through CHAT_CMD, passes
// every test of its step that is not skipped, and no test passes without
// talking to it: the suites stay fit for classroom mode as tests are added.
func TestEveryStepGradesItsOwnProgramThroughChatCmd(t *testing.T) {
	t.Parallel()
	bin := t.TempDir()
	for _, step := range []string{"step1-echo", "step2-broadcast", "step3-usernames", "step4-exit-queue", "step5-websocket", "step6-cluster"} {
		t.Run(step, func(t *testing.T) {
			program := filepath.Join(bin, step)
			build := exec.Command("go", "build", "-o", program, "../../"+step)
			out, err := build.CombinedOutput()
			require.NoError(t, err, "%s", out)
			r, err := grade("../../"+step, program, "", "-short")
			require.NoError(t, err)
			for _, test := range r.order {
				switch res := r.results[test]; res.outcome {
				case passed, skipped:
				case ungraded:
					t.Errorf("%s passed without talking to the server under test: it must grade it, or be skipped in classroom mode\n%s", test, res.output)
				default:
					t.Errorf("%s: %s\n%s", test, res.outcome, res.output)
				}
			}
		})
	}
}

// Copies of the Python server with the classic bugs each fail the test
// that catches the bug, with the message a student needs.
func TestClassicBugsFailWithTheMessageAStudentNeeds(t *testing.T) {
	t.Parallel()
	source, err := os.ReadFile("testdata/chat4.py")
	require.NoError(t, err)
	for _, bug := range []struct {
		name     string
		old, new string   // the bug, as a change to chat4.py
		test     string   // the test that must fail
		says     []string // what its failure must say
	}{
		{
			name: "the newcomer hears its own arrival",
			old:  `await room.broadcast(f"{name} has arrived", skip=client)`,
			new:  `await room.broadcast(f"{name} has arrived")`,
			test: "TestOthersHearArrivalButNewcomerDoesNot",
			says: []string{`expected "bob`, ` has arrived", got "ana`},
		},
		{
			name: "no check that a name is free",
			old:  `if reason is None and name in room.clients:`,
			new:  `if False:`,
			test: "TestANameIsTakenWhateverItsCase",
			says: []string{`expected "name is taken" (ana`, `got "welcome ana`},
		},
		{
			name: "the broadcast waits for a client that reads nothing",
			old: `        if self.writer.transport.get_write_buffer_size() + len(data) > MAX_PENDING:
            await self.room.drop(self)
            return
        self.writer.write(data)`,
			new: `        self.writer.write(data)
        await self.writer.drain()`,
			test: "TestStuckClientIsDroppedAndTheRoomGoesOn",
			says: []string{"a client that reads nothing blocked everyone", "while stuck"},
		},
		{
			name: "a crash on an empty name",
			old:  `return name, "name is empty"`,
			new:  `sys.exit("chat4.py: what, no name?")`,
			test: "TestInvalidNamesAreRefusedWithAReason",
			says: []string{"your server exited with status 1 during the test", "chat4.py: what, no name?"},
		},
		{
			name: "SIGTERM not handled",
			old:  `loop.add_signal_handler(sig, stop.set)`,
			new:  `pass`,
			test: "TestProgramSaysGoodbyeAndStopsOnSIGTERM",
			says: []string{`expected "server is shutting down", got EOF`, "was killed by signal terminated"},
		},
		{
			name: "no log line",
			old:  `log(f"listening on {where[0]}:{where[1]}"`,
			new:  `log(f"serving on {where[0]}:{where[1]}"`,
			test: "TestProgramLogsWhereItListens",
			says: []string{`expected your server to log "listening on 127.0.0.1:`, "serving on 127.0.0.1:"},
		},
		{
			name: "no line limit",
			old:  `if end >= MAX_LINE or (end < 0 and len(self.buf) >= MAX_LINE):`,
			new:  `if False:`,
			test: "TestLineAtTheLimitIsDelivered|TestLongLineGetsAnErrorAndADisconnect",
			says: []string{`expected "line too long (max 4096 bytes)", got "`},
		},
	} {
		t.Run(bug.name, func(t *testing.T) {
			require.Equal(t, 1, strings.Count(string(source), bug.old), "chat4.py has changed: the bug no longer applies")
			buggy := filepath.Join(t.TempDir(), "chat4.py")
			require.NoError(t, os.WriteFile(buggy, []byte(strings.Replace(string(source), bug.old, bug.new, 1)), 0o644))
			r, err := grade(step, python(t, buggy), "", "-run", "^("+bug.test+")$")
			require.NoError(t, err)
			var failures string
			for _, test := range r.order {
				if r.results[test].outcome == failed {
					failures += r.results[test].output
				}
			}
			require.NotEmpty(t, failures, "no test caught the bug %q (ran %q)", bug.name, r.order)
			for _, want := range bug.says {
				assert.Contains(t, failures, want, "the failure does not say %q", want)
			}
		})
	}
}
