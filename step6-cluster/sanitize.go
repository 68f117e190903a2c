package main

import (
	"strings"
	"unicode"
)

// sanitize makes client text safe for a terminal: invalid UTF-8, and control
// characters (ESC starts escape sequences, CR overwrites lines), become U+FFFD.
func sanitize(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	return strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return '\uFFFD'
		}
		return r
	}, s)
}
