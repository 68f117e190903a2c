package main

import (
	"os"
	"os/exec"
	"testing"

	"gochat-steps/internal/chattest"

	"github.com/stretchr/testify/assert"
)

// TestStep5sSuitePassesAgainstStep6 runs step 5's tests in classroom mode
// (CHAT_ADDR) against a step 6 server with its NATS inside: step 6 speaks
// step 5's protocol, exactly, so step 5's suite is step 6's too.
func TestStep5sSuitePassesAgainstStep6(t *testing.T) {
	chattest.InProcess(t)
	if testing.Short() {
		t.Skip("slow: builds and runs step 5's suite: -short")
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command in PATH to run step 5's suite with")
	}
	addr := start(t, defaults)
	cmd := exec.Command(goTool, "test", "-count=1", "../step5-websocket")
	cmd.Env = append(os.Environ(), "CHAT_ADDR="+addr)
	out, err := cmd.CombinedOutput()
	assert.NoError(t, err, "step 5's suite, with CHAT_ADDR=%s (a step 6 server):\n%s", addr, out)
}
