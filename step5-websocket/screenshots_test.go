package main

import (
	"bytes"
	"context"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"
)

// TestScreenshots writes the screenshots of the page that the step 5
// chapter shows: a desktop (1280x800, light) and a phone (390x844, dark).
// It runs only when asked:
//
//	SCREENSHOTS=1 go test -count=1 -run '^TestScreenshots$' ./step5-websocket
//
// With pngquant installed (apt-get install -y pngquant), the files are
// made smaller still.
func TestScreenshots(t *testing.T) {
	if os.Getenv("SCREENSHOTS") == "" {
		t.Skip("writes docs/img/step5-*.png: run with SCREENSHOTS=1")
	}
	b := browser(t)
	addr := start(t, defaults)
	url := "http://" + addr + "/"
	bob, cat := join(t, addr, "bob"), join(t, addr, "cat")
	talk := func(c *wsClient, text string) {
		t.Helper()
		c.send(text)
		require.NoError(t, c.tryUntil(says(c.name, text)))
	}
	talk(bob, "morning! the build is green again")
	talk(cat, "nice. The flaky test was a sleep; a poll with a deadline fixed it: https://go.dev/wiki/TestComments")
	talk(bob, "<b>bold?</b> no: the page shows messages as text, never as HTML")

	desktop := open(t, b, url, 1280, 800)
	enter(t, desktop, "ana")
	say(t, desktop, "hi both, just catching up")
	logText(t, desktop, "just catching up")
	phone := open(t, b, url, 390, 844)
	_, err := chromedp.Call(phone, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{
		Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: "dark"}},
	})
	require.NoError(t, err)
	enter(t, phone, "dmitri")
	logText(t, desktop, "dmitri joined")
	talk(cat, "welcome dmitri! the log above is the history: the last 100 messages")
	say(t, phone, "thanks! and a long one wraps on a phone: https://example.com/a/very/long/path/that/would/not/fit/on/one/line")
	logText(t, desktop, "would/not/fit")
	logText(t, phone, "would/not/fit")
	talk(bob, "who is here is listed beside the log (above it, on a phone); your own lines are shaded")
	logText(t, desktop, "your own lines")
	logText(t, phone, "your own lines")

	for name, ctx := range map[string]context.Context{"desktop": desktop, "phone": phone} {
		shot, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
		require.NoError(t, err)
		path := filepath.Join("..", "docs", "img", "step5-"+name+".png")
		require.NoError(t, os.WriteFile(path, recompress(t, shot), 0o644))
		if pngquant, err := exec.LookPath("pngquant"); err == nil {
			out, err := exec.Command(pngquant, "--force", "--skip-if-larger", "--strip", "--output", path, path).CombinedOutput()
			require.NoError(t, err, "pngquant: %s", out)
		}
		t.Logf("wrote %s", path)
	}
}

// recompress encodes a PNG again, with the best compression Go has.
func recompress(t *testing.T, shot []byte) []byte {
	img, err := png.Decode(bytes.NewReader(shot))
	require.NoError(t, err)
	var out bytes.Buffer
	enc := png.Encoder{CompressionLevel: png.BestCompression}
	require.NoError(t, enc.Encode(&out, img))
	return out.Bytes()
}
