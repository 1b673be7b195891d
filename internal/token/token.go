// Package token holds the one rule for the names conductor uses as single
// tokens: namespaces, job types, pool names, host ids and job ids. Such a
// name is safe in a NATS subject, a stream name, a key-value bucket name, a
// log key and an environment variable's value.
//
// It depends on nothing, so that pkg/broker can check a pool name without
// linking the NATS side (internal/subject), and both check by the same rule.
package token

import (
	"errors"
	"fmt"
)

// MaxLen bounds the length of a token.
const MaxLen = 128

// ErrInvalid is wrapped by every error Check returns.
var ErrInvalid = errors.New("invalid name")

// Check reports whether s may be used as a token: 1 to MaxLen characters
// from [A-Za-z0-9_-]. kind names what s is ("pool name") in the error.
func Check(kind, s string) error {
	if s == "" {
		return fmt.Errorf("%w: %s is empty", ErrInvalid, kind)
	}
	if len(s) > MaxLen {
		return fmt.Errorf("%w: %s %q is longer than %d characters", ErrInvalid, kind, s, MaxLen)
	}
	for _, c := range s {
		if !valid(c) {
			return fmt.Errorf("%w: %s %q has %q; use only letters, digits, '-' and '_'", ErrInvalid, kind, s, c)
		}
	}
	return nil
}

// Sanitize turns s into a valid token by replacing every other character
// with '-', and cutting it to MaxLen characters; "" becomes "unknown". It is
// for defaults such as the hostname, never for user input, which is
// rejected instead.
func Sanitize(s string) string {
	b := []rune(s)
	for i, c := range b {
		if !valid(c) {
			b[i] = '-'
		}
	}
	if len(b) > MaxLen {
		b = b[:MaxLen]
	}
	if len(b) == 0 {
		return "unknown"
	}
	return string(b)
}

func valid(c rune) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_'
}
