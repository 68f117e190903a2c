// Package layout checks the shape every step keeps: main.go holds the
// step's idea within a budget of lines, and what the steps share lives in
// files that are byte for byte the same in every step that has them.
package layout

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// steps are the step directories, each with its budget for main.go in
// lines, comments included.
var steps = []struct {
	dir    string
	budget int
}{
	{"step1-echo", 90},
	{"step2-broadcast", 170},
	{"step3-usernames", 210},
	{"step4-exit-queue", 265},
	{"step5-websocket", 290},
	{"step6-cluster", 405},
}

// maxRatio bounds a step's non-test Go files, in lines, against its
// main.go: the lesson stays the bulk of what a learner reads, while the
// defences every step shares (explained once, in docs/shared.md) grow.
// Step 6 is counted without the files it takes from step 5 byte for byte
// (web.go and the shared files, read in step 5): main.go and cluster.go.
// Step 5 sets it: its web.go holds the HTTP server's limits and checks,
// and what x/net/websocket does not do (pings, pongs, odd frames), and
// wsConn, which turns a batch into one frame; limit.go, the flood control
// of steps 2-5 (855 lines against 290).
const maxRatio = 2.96

// shared are the files the steps share, explained once in docs/shared.md.
var shared = []string{"tcp.go", "sanitize.go", "outbox.go", "names.go", "limit.go"}

// root is the repository's root, relative to this package.
const root = "../.."

func lines(t *testing.T, path string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	return bytes.Count(b, []byte("\n"))
}

func TestMainGoStaysWithinItsBudget(t *testing.T) {
	for _, s := range steps {
		main := lines(t, filepath.Join(root, s.dir, "main.go"))
		assert.LessOrEqual(t, main, s.budget, "%s/main.go has %d lines; its budget is %d", s.dir, main, s.budget)

		files, err := filepath.Glob(filepath.Join(root, s.dir, "*.go"))
		require.NoError(t, err)
		total := 0
		var names []string
		for _, f := range files {
			if !strings.HasSuffix(f, "_test.go") && !(s.dir == "step6-cluster" && sameAsStep5(t, f)) {
				total += lines(t, f)
				names = append(names, filepath.Base(f))
			}
		}
		assert.LessOrEqual(t, float64(total), maxRatio*float64(main),
			"%s: its non-test Go files (%s) have %d lines, more than %v times main.go's %d",
			s.dir, strings.Join(names, ", "), total, maxRatio, main)
	}
}

// sameAsStep5 reports whether the file at path is step 5's file of the same
// name, byte for byte.
func sameAsStep5(t *testing.T, path string) bool {
	t.Helper()
	got, err := os.ReadFile(path)
	require.NoError(t, err)
	want, err := os.ReadFile(filepath.Join(root, "step5-websocket", filepath.Base(path)))
	return err == nil && bytes.Equal(got, want)
}

func TestSharedFilesAreTheSameInEveryStepThatHasThem(t *testing.T) {
	for _, name := range shared {
		var first string
		var want []byte
		for _, s := range steps {
			got, err := os.ReadFile(filepath.Join(root, s.dir, name))
			if os.IsNotExist(err) {
				continue
			}
			require.NoError(t, err)
			if first == "" {
				first, want = s.dir, got
				continue
			}
			assert.True(t, bytes.Equal(want, got),
				"%s/%s differs from %s/%s: shared files are copied, not edited (diff -u %[3]s/%[2]s %[1]s/%[2]s)",
				s.dir, name, first, name)
		}
		assert.NotEmpty(t, first, "no step has %s", name)
	}
}

// TestStep6IsStep5WithTheClusterInMainGo: step 6 changes step 5's main.go
// alone (and adds cluster.go); every other file of step 5's program, its
// web server and its page among them, is in step 6 byte for byte.
func TestStep6IsStep5WithTheClusterInMainGo(t *testing.T) {
	entries, err := os.ReadDir(filepath.Join(root, "step5-websocket"))
	require.NoError(t, err)
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() || name == "main.go" || strings.HasSuffix(name, "_test.go") {
			continue
		}
		want, err := os.ReadFile(filepath.Join(root, "step5-websocket", name))
		require.NoError(t, err)
		got, err := os.ReadFile(filepath.Join(root, "step6-cluster", name))
		if assert.NoError(t, err, "step 6 has no %s: copy it from step 5", name) {
			assert.True(t, bytes.Equal(want, got),
				"step6-cluster/%s differs from step5-websocket/%[1]s: copy it (cp step5-websocket/%[1]s step6-cluster/)", name)
		}
	}
}

// TestStep5PageStaysSmall keeps step 5's page one a learner reads in
// minutes: its HTML, script and style sheet together under 300 lines.
func TestStep5PageStaysSmall(t *testing.T) {
	total := 0
	for _, name := range []string{"index.html", "chat.js", "chat.css"} {
		total += lines(t, filepath.Join(root, "step5-websocket", name))
	}
	assert.Less(t, total, 300, "step5-websocket's index.html, chat.js and chat.css have %d lines together", total)
}
