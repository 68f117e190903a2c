package main

import (
	"testing"

	"gochat-steps/internal/chattest"

	"github.com/stretchr/testify/assert"
)

func TestEachMessageIsPrintedOnALineOfItsOwn(t *testing.T) {
	chattest.OwnCode(t)
	for _, tc := range []struct {
		m    message
		want string
	}{
		{message{Author: "ana", Body: "hi"}, "ana: hi"},
		{message{Event: "arrived", Body: "bob"}, "* arrived bob"},
		{message{Event: "welcome", Body: "cy", Here: []string{"ana", "bob"}}, "* welcome cy [here: ana,bob]"},
		{message{Event: "welcome", Body: "ana"}, "* welcome ana [here: ]"},
	} {
		assert.Equal(t, tc.want, format(tc.m), "format(%+v)", tc.m)
	}
}
