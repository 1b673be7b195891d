// Package consoletest finds the Chromium that the console's browser tests
// drive (internal/console's and integration/'s).
package consoletest

import (
	"os"
	"os/exec"
	"testing"
)

// Chromium returns the path of a Chromium (or Chrome) binary:
// $CONSOLE_CHROMIUM, else the first of the usual names on $PATH. Without
// one the test is skipped, saying why, unless CI is set: there it fails
// (.ci/run installs Debian's chromium).
func Chromium(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("CONSOLE_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "chrome", "headless-shell"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	const why = "needs a Chromium binary to drive the console's page (apt-get install chromium, or CONSOLE_CHROMIUM=/path/to/chrome)"
	if os.Getenv("CI") != "" {
		t.Fatal(why + "; CI is set, where .ci/run installs it")
	}
	t.Skip(why)
	return ""
}
