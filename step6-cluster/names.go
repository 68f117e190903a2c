package main

import (
	"errors"
	"fmt"
	"unicode"
	"unicode/utf8"
)

const maxName = 20 // the longest username, in characters

// checkName says what is wrong with a name, if anything. Names are short and
// plain: letters of any script (with their accents), digits, '_' and '-'.
func checkName(name string) error {
	switch {
	case name == "":
		return errors.New("name is empty")
	case utf8.RuneCountInString(name) > maxName:
		return fmt.Errorf("name is too long (max %d characters)", maxName)
	}
	for _, r := range name {
		if !unicode.In(r, unicode.Letter, unicode.Mark, unicode.Digit) && r != '_' && r != '-' {
			return fmt.Errorf("name has a character that is not allowed: %q (use letters, digits, _ or -)", r)
		}
	}
	return nil
}
