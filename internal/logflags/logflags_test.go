package logflags

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestNew(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, format, level string
		json                bool
		debug, info, warn   bool // which of the three lines are written
	}{
		{"Defaults", "", "", false, false, true, true},
		{"Text", "text", "info", false, false, true, true},
		{"JSON", "json", "info", true, false, true, true},
		{"JSONUpper", "JSON", "DEBUG", true, true, true, true},
		{"Debug", "text", "debug", false, true, true, true},
		{"Warn", "text", "warn", false, false, false, true},
		{"Warning", "json", "warning", true, false, false, true},
		{"Error", "text", "error", false, false, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var buf bytes.Buffer
			log, err := New(&buf, tc.format, tc.level)
			require.NoError(t, err)
			log.Debug("d", "host", "h1")
			log.Info("i", "host", "h1")
			log.Warn("w", "host", "h1")
			lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
			if buf.Len() == 0 {
				lines = nil
			}
			var msgs []string
			for _, l := range lines {
				if tc.json {
					var rec map[string]any
					require.NoError(t, json.Unmarshal([]byte(l), &rec), l)
					require.Equal(t, "h1", rec["host"])
					msgs = append(msgs, rec["msg"].(string))
				} else {
					require.Contains(t, l, "host=h1")
					require.False(t, strings.HasPrefix(l, "{"), l)
					_, rest, _ := strings.Cut(l, "msg=")
					msgs = append(msgs, strings.Fields(rest)[0])
				}
			}
			var want []string
			for _, w := range []struct {
				on  bool
				msg string
			}{{tc.debug, "d"}, {tc.info, "i"}, {tc.warn, "w"}} {
				if w.on {
					want = append(want, w.msg)
				}
			}
			require.Equal(t, want, msgs)
		})
	}
}

func TestNew_BadValues(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ format, level, err string }{
		{"xml", "info", `--log-format "xml": bad value: want text or json`},
		{"text", "loud", `--log-level "loud": bad value: want debug, info, warn or error`},
		{"text", "info+2", `--log-level "info+2": bad value: want debug, info, warn or error`},
		{"yaml", "loud", `--log-level "loud"`}, // the level is read first
	} {
		log, err := New(&bytes.Buffer{}, tc.format, tc.level)
		require.ErrorIs(t, err, ErrBadValue)
		require.ErrorContains(t, err, tc.err)
		require.Nil(t, log)
	}
}

func TestRegister(t *testing.T) {
	t.Parallel()
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	f := Register(fs)
	require.Equal(t, &Flags{Format: "text", Level: "info"}, f)
	require.NoError(t, fs.Parse([]string{"--log-format", "json", "--log-level", "warn"}))
	var buf bytes.Buffer
	log, err := f.Logger(&buf)
	require.NoError(t, err)
	log.Info("hidden")
	log.Warn("shown")
	require.Contains(t, buf.String(), `"msg":"shown"`)
	require.NotContains(t, buf.String(), "hidden")
}

func ExampleNew() {
	if _, err := New(os.Stderr, "xml", "info"); err != nil {
		fmt.Println(err)
	}
	// Output: --log-format "xml": bad value: want text or json
}
