package ctl

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/pflag"
)

// Output formats of -o.
const (
	outTable = "table"
	outJSON  = "json"
	outWide  = "wide"
)

var (
	_ pflag.Value = (*outputFlag)(nil)
	_ pflag.Value = (*waitFlag)(nil)
)

// outputFlag is -o/--output: table, json or wide; "" when not given
// (a table, but for job, whose state prints as JSON unless -o table).
type outputFlag struct{ format string }

func (o *outputFlag) String() string { return cmp.Or(o.format, outTable) }
func (o *outputFlag) Type() string   { return "table|json|wide" }
func (o *outputFlag) Set(s string) error {
	switch s {
	case outTable, outJSON, outWide:
		o.format = s
		return nil
	}
	return fmt.Errorf("want table, json or wide, not %q", s)
}

func (c *client) json() bool { return c.output == outJSON }
func (c *client) wide() bool { return c.output == outWide }

// printJSON prints a JSON answer decoded and encoded again, indented: keys
// sorted, numbers as they came. An answer that is not JSON is printed as
// it is.
func printJSON(w io.Writer, raw []byte) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		_, err := fmt.Fprintln(w, strings.TrimSpace(string(raw)))
		return err
	}
	return encodeJSON(w, v, "  ")
}

// encodeJSON writes v as JSON, indented by indent (none: one line).
func encodeJSON(w io.Writer, v any, indent string) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", indent)
	return enc.Encode(v)
}

// column is one column of a table of JSON objects: the key it shows, and
// how (nil: cell).
type column struct {
	key    string
	head   string // the heading, if not key in capitals
	format func(v any) string
}

func col(key string) column { return column{key: key} }

// columns is a table's columns, and the ones -o wide adds.
type columns struct{ base, wide []column }

// table prints the JSON array answered by GET path: as a table, or as
// JSON with -o json.
func (c *client) table(ctx context.Context, path string, cols columns) error {
	raw, err := c.get(ctx, path)
	if err != nil {
		return err
	}
	if c.json() {
		return printJSON(c.out, raw)
	}
	var rows []map[string]any
	if err := json.Unmarshal(raw, &rows); err != nil {
		return fmt.Errorf("decode %s: %w", path, err)
	}
	return c.printTable(rows, cols)
}

// printTable prints rows as aligned columns.
func (c *client) printTable(rows []map[string]any, cols columns) error {
	all := cols.base
	if c.wide() {
		all = append(all[:len(all):len(all)], cols.wide...)
	}
	tw := tabwriter.NewWriter(c.out, 0, 4, 2, ' ', 0)
	heads := make([]string, len(all))
	for i, col := range all {
		heads[i] = cmp.Or(col.head, strings.ToUpper(col.key))
	}
	fmt.Fprintln(tw, strings.Join(heads, "\t"))
	for _, r := range rows {
		vals := make([]string, len(all))
		for i, col := range all {
			if col.format != nil {
				vals[i] = col.format(r[col.key])
			} else {
				vals[i] = cell(col.key, r[col.key])
			}
		}
		fmt.Fprintln(tw, strings.Join(vals, "\t"))
	}
	return tw.Flush()
}

// maxError bounds the error column of a table: a job's error can be a whole
// stack trace (conductorctl job ID shows it all).
const maxError = 60

// cell formats v for column col of a table: on one line, and an error cut
// to maxError characters.
func cell(col string, v any) string {
	s := strings.Join(strings.Fields(format(v)), " ")
	if r := []rune(s); col == "error" && len(r) > maxError {
		s = string(r[:maxError-1]) + "…"
	}
	return s
}

func format(v any) string {
	switch v := v.(type) {
	case nil:
		return "-"
	case float64:
		return fmt.Sprintf("%.0f", v)
	case string:
		if v == "" {
			return "-"
		}
		return v
	case map[string]any, []any:
		b, _ := json.Marshal(v)
		return string(b)
	default:
		return fmt.Sprint(v)
	}
}

// sizeCell formats a number of bytes: 0, 512 B, 1.5 KiB, 7.0 MiB, 1.2 GiB.
func sizeCell(v any) string {
	n, ok := v.(float64)
	if !ok {
		return format(v)
	}
	return size(int64(n))
}

func size(n int64) string {
	const unit = 1024
	switch {
	case n == 0:
		return "0"
	case n < unit:
		return fmt.Sprintf("%d B", n)
	}
	f, units := float64(n), []string{"KiB", "MiB", "GiB", "TiB", "PiB"}
	i := int(math.Min(math.Floor(math.Log(f)/math.Log(unit)), float64(len(units)))) - 1
	i = max(i, 0)
	return fmt.Sprintf("%.1f %s", f/math.Pow(unit, float64(i+1)), units[i])
}

// human is a duration for a person: 450ms, 12s, 3m12s, 5h4m, 3d2h.
func human(d time.Duration) string {
	d = d.Abs()
	switch {
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Round(time.Second)/time.Second))
	case d < time.Hour:
		d = d.Round(time.Second)
		return fmt.Sprintf("%dm%ds", int(d/time.Minute), int(d%time.Minute/time.Second))
	case d < 24*time.Hour:
		d = d.Round(time.Minute)
		return fmt.Sprintf("%dh%dm", int(d/time.Hour), int(d%time.Hour/time.Minute))
	}
	d = d.Round(time.Hour)
	return fmt.Sprintf("%dd%dh", int(d/(24*time.Hour)), int(d%(24*time.Hour)/time.Hour))
}

// ago is when t was, from now: "3m12s ago", or "in 5s" for a time to come.
func ago(t, now time.Time) string {
	if t.IsZero() {
		return "-"
	}
	if t.After(now) {
		return "in " + human(t.Sub(now))
	}
	return human(now.Sub(t)) + " ago"
}

// ageCell formats an RFC 3339 time of a JSON answer as an age.
func (c *client) ageCell(v any) string {
	s, ok := v.(string)
	if !ok {
		return format(v)
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return format(v)
	}
	return ago(t, c.now())
}

// durationCell formats a Go duration of a JSON answer ("1m2.5s") for a
// person.
func durationCell(v any) string {
	s, ok := v.(string)
	if !ok {
		return format(v)
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return format(v)
	}
	return human(d)
}
