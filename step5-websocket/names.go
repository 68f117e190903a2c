package main

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/secure/bidirule"
	"golang.org/x/text/secure/precis"
	"golang.org/x/text/unicode/bidi"
	"golang.org/x/text/unicode/norm"
)

const (
	maxName  = 20 // the longest username, in characters
	maxMarks = 4  // the most nonspacing marks on one character
)

// usernames is the standard for usernames, PRECIS: the UsernameCaseMapped
// profile of RFC 8265. It maps fullwidth letters to normal ones and upper
// case to lower case, and composes accents (NFC), so that names that look
// alike become one name; and it refuses invisible characters. Its Bidi Rule
// is left out: x/text applies it to every name not in ASCII, and so refuses
// "_josé" (golang.org/issue/17383), where the RFC asks it only of names
// written right to left. checkName applies it so.
var usernames = precis.NewIdentifier(precis.FoldWidth, precis.LowerCase(), precis.Norm(norm.NFC))

// checkName returns the name to use for what a client sent, or what is wrong
// with it. Names are short and plain: letters of any script (with their
// accents), digits, '_' and '-'. Names that look alike become one name.
func checkName(name string) (string, error) {
	name = strings.TrimSpace(name)
	switch {
	case name == "":
		return "", errors.New("name is empty")
	case utf8.RuneCountInString(name) > maxName:
		return "", fmt.Errorf("name is too long (max %d characters)", maxName)
	}
	for _, r := range name {
		if !allowed(r) { // %+q writes it in ASCII: U+3164, invisible, as '\u3164'
			return "", fmt.Errorf("name has a character that is not allowed: %+q (use letters, digits, _ or -)", r)
		}
	}
	name, err := usernames.String(name)
	if err != nil {
		return "", errors.New("name is not a valid username (RFC 8265)")
	}
	if bidirule.DirectionString(name) == bidi.RightToLeft && !bidirule.ValidString(name) {
		return "", errors.New("name breaks the Bidi Rule for right-to-left text (RFC 5893)")
	}
	if err := checkMarks(name); err != nil {
		return "", err
	}
	if err := checkScripts(name); err != nil {
		return "", err
	}
	return name, nil
}

// allowed says whether r may be in a name: '_', '-', or a letter, mark or
// digit that PRECIS allows (it refuses invisible ones, such as U+FE0F).
func allowed(r rune) bool {
	if r == '_' || r == '-' {
		return true
	}
	if !unicode.In(r, unicode.Letter, unicode.Mark, unicode.Nd) {
		return false
	}
	_, err := usernames.String(string(r))
	return err == nil
}

// checkMarks refuses what PRECIS lets through but hides a look-alike: the
// same mark twice on one character, or more than maxMarks, as Unicode's
// security guide (UTS #39, section 5.4) advises.
func checkMarks(name string) error {
	marks := 0
	var last rune
	for _, r := range norm.NFD.String(name) { // marks apart, in a fixed order
		if !unicode.In(r, unicode.Mn, unicode.Me) {
			marks, last = 0, r
			continue
		}
		if marks++; marks > maxMarks {
			return fmt.Errorf("name has more than %d marks on one character", maxMarks)
		}
		if r == last {
			return fmt.Errorf("name has the same mark twice on one character: %+q", r)
		}
		last = r
	}
	return nil
}

// checkScripts refuses a name that mixes scripts, such as a Cyrillic 'а'
// among Latin letters, except those that go together: Latin with the
// scripts of Chinese, Japanese or Korean (UTS #39's "highly restrictive").
func checkScripts(name string) error {
	var used []string
	for _, r := range name {
		if s := script(r); s != "" && !slices.Contains(used, s) {
			used = append(used, s)
		}
	}
	fits := func(together ...string) bool {
		for _, s := range used {
			if !slices.Contains(together, s) {
				return false
			}
		}
		return true
	}
	if len(used) <= 1 || fits("Latin", "Han", "Hiragana", "Katakana") ||
		fits("Latin", "Han", "Hangul") || fits("Latin", "Han", "Bopomofo") {
		return nil
	}
	slices.Sort(used)
	return fmt.Errorf("name mixes scripts: %s", strings.Join(used, ", "))
}

// script is the name of r's script, or "" for Common and Inherited (digits,
// '_', '-' and most marks), which go with any script.
func script(r rune) string {
	for name, table := range unicode.Scripts {
		if name != "Common" && name != "Inherited" && unicode.Is(table, r) {
			return name
		}
	}
	return ""
}
