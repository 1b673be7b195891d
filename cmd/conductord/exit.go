package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
)

// usageError is a command line conductord cannot take: the error and the usage
// are on stderr already, and conductord exits 2.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

// usage says err and fs's usage on fs's output, and returns err as a
// usageError.
func usage(fs *flag.FlagSet, err error) error {
	fmt.Fprintf(fs.Output(), "conductord: %v\n", err)
	fs.Usage()
	return usageError{err}
}

// exitCode says err, if run has not said it already, on stderr and
// returns the exit code it means: 0 for none (or -h), 2 for a usage
// error, else 1.
func exitCode(err error, stderr io.Writer) int {
	var ue usageError
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &ue):
		return 2
	default:
		fmt.Fprintln(stderr, "conductord:", err)
		return 1
	}
}
