// Package logflags turns the --log-format and --log-level flags that
// conductord, workerd and conductorctl share into a *slog.Logger, with one
// set of names and one set of errors for them.
package logflags

import (
	"cmp"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"
)

// Defaults of the two flags.
const (
	DefaultFormat = "text"
	DefaultLevel  = "info"
)

// Usage texts of the two flags, for flag.String.
const (
	FormatUsage = "log format: text (key=value lines) or json (one JSON object a line)"
	LevelUsage  = "log level: debug, info, warn or error"
)

// ErrBadValue is wrapped by every error New returns.
var ErrBadValue = errors.New("bad value")

// New returns a logger writing to w in format ("text" or "json") at level
// ("debug", "info", "warn" or "error", any case) and above. An empty
// format or level is its default. A bad value is an error that names the
// flag and the values it takes.
func New(w io.Writer, format, level string) (*slog.Logger, error) {
	lvl, err := ParseLevel(level)
	if err != nil {
		return nil, err
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch strings.ToLower(cmp.Or(format, DefaultFormat)) {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	default:
		return nil, fmt.Errorf("--log-format %q: %w: want text or json", format, ErrBadValue)
	}
}

// ParseLevel reads a --log-level value: debug, info, warn or error, in
// any case; empty is info. Unlike slog.Level's UnmarshalText it takes no
// offsets ("info+2"): the flag names a level, nothing between.
func ParseLevel(level string) (slog.Level, error) {
	switch strings.ToLower(cmp.Or(level, DefaultLevel)) {
	case "debug":
		return slog.LevelDebug, nil
	case "info":
		return slog.LevelInfo, nil
	case "warn", "warning":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	default:
		return 0, fmt.Errorf("--log-level %q: %w: want debug, info, warn or error", level, ErrBadValue)
	}
}

// Flags are the two flags as a FlagSet holds them.
type Flags struct {
	Format, Level string
}

// Register defines --log-format and --log-level on fs, with their
// defaults and usage texts, and returns where fs puts their values.
func Register(fs *flag.FlagSet) *Flags {
	f := &Flags{}
	fs.StringVar(&f.Format, "log-format", DefaultFormat, FormatUsage)
	fs.StringVar(&f.Level, "log-level", DefaultLevel, LevelUsage)
	return f
}

// Logger is New(w, f.Format, f.Level).
func (f *Flags) Logger(w io.Writer) (*slog.Logger, error) { return New(w, f.Format, f.Level) }
