// Package cmdline holds what the command lines of conductord and workerd
// share: a usage error, which exits 2 with the usage on stderr, and the
// exit code a run's error means. (conductorctl's, on cobra, are its own:
// internal/ctl.)
package cmdline

import (
	"errors"
	"flag"
	"fmt"
	"io"
)

// UsageError is a command line the program cannot take: the error and the
// usage are on stderr already, and the program exits 2.
type UsageError struct{ Err error }

func (e UsageError) Error() string { return e.Err.Error() }
func (e UsageError) Unwrap() error { return e.Err }

// Usage says err and fs's usage on fs's output, after fs's name, and
// returns err as a UsageError.
func Usage(fs *flag.FlagSet, err error) error {
	fmt.Fprintf(fs.Output(), "%s: %v\n", fs.Name(), err)
	fs.Usage()
	return UsageError{err}
}

// ExitCode says err, after name, on stderr unless it is a usage error
// (said already), and returns the exit code it means: 0 for none (or -h),
// 2 for a usage error, else 1.
func ExitCode(name string, err error, stderr io.Writer) int {
	var ue UsageError
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &ue):
		return 2
	default:
		fmt.Fprintln(stderr, name+":", err)
		return 1
	}
}
