package main

import (
	"strings"
	"unicode"
)

// sanitize makes client text safe to show: invalid UTF-8, control characters
// (ESC starts escape sequences, CR overwrites lines), line and paragraph
// separators (they start a new line), and invisible format characters (U+202E
// turns the rest of a line right to left) become U+FFFD. The two joiners stay:
// emoji sequences and some scripts need them, and they move no text.
func sanitize(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	return strings.Map(func(r rune) rune {
		switch {
		case ' ' <= r && r <= '~': // printable ASCII: most text, and no table to search
			return r
		case r == zwj || r == zwnj:
			return r
		case unicode.In(r, unicode.Cc, unicode.Cf, unicode.Zl, unicode.Zp):
			return '\uFFFD'
		}
		return r
	}, s)
}

const (
	zwj  = '\u200D' // zero width joiner: 👩‍👩‍👧 is 👩, zwj, 👩, zwj, 👧
	zwnj = '\u200C' // zero width non-joiner: Persian and Indic text need it
)
