package external_test

import (
	"bytes"
	"os/exec"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

const module = "github.com/conductor-run/conductor"

// publicPackages are conductor's public API.
var publicPackages = []string{"pkg/broker", "pkg/client", "pkg/conductor", "pkg/worker", "pkg/workerd"}

// goTool runs the go tool with args in conductor's module directory and
// returns its output; it skips t when there is no go tool.
func goTool(t *testing.T, args ...string) string {
	t.Helper()
	path, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("skipped: the go tool is not in PATH (%v), and this test runs go list and go doc", err)
	}
	dir := "../.." // this module's replace directive points there
	if out, err := exec.Command(path, "list", "-m", "-f", "{{.Dir}}", module).Output(); err == nil {
		dir = strings.TrimSpace(string(out))
	}
	cmd := exec.Command(path, args...)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	require.NoErrorf(t, err, "go %s: %s", strings.Join(args, " "), stderr.String())
	return string(out)
}

// A submitter's program links neither the NATS server nor the broker nor
// workerd's agent (STYLE rule 21).
func TestClient_Dependencies(t *testing.T) {
	t.Parallel()
	deps := strings.Fields(goTool(t, "list", "-deps", module+"/pkg/client"))
	require.Contains(t, deps, "github.com/nats-io/nats.go", "go list -deps found pkg/client's deps")
	for _, dep := range deps {
		for _, banned := range []string{"github.com/nats-io/nats-server", module + "/pkg/broker", module + "/internal/agent"} {
			require.Falsef(t, dep == banned || strings.HasPrefix(dep, banned+"/"),
				"pkg/client depends on %s (banned: %s)", dep, banned)
		}
	}
}

// No exported declaration of a public package names a type (or anything)
// of an internal package (STYLE rule 21), as go doc -all shows them.
func TestPublicPackages_SpeakOnlyPublicTypes(t *testing.T) {
	t.Parallel()
	names := strings.Fields(goTool(t, "list", "-f", "{{.Name}}", module+"/internal/..."))
	for _, want := range []string{"wire", "subject", "proto", "agent"} {
		require.Contains(t, names, want, "go list found the internal packages")
	}
	internal := internalRef(names)
	for _, pkg := range publicPackages {
		t.Run(strings.ReplaceAll(pkg, "/", "_"), func(t *testing.T) {
			t.Parallel()
			decls := declarations(goTool(t, "doc", "-all", module+"/"+pkg))
			require.NotEmpty(t, decls, "go doc -all %s shows declarations", pkg)
			for _, line := range decls {
				require.Falsef(t, internal.MatchString(line), "%s exports an internal name: %s", pkg, line)
			}
		})
	}
}

// internalRef matches a qualified name of one of the internal packages
// names, or a path into internal/.
func internalRef(names []string) *regexp.Regexp {
	quoted := make([]string, len(names))
	for i, n := range names {
		quoted[i] = regexp.QuoteMeta(n)
	}
	return regexp.MustCompile(`\b(` + strings.Join(quoted, "|") + `)\.[A-Za-z_]|internal/`)
}

// comment matches a // comment to the end of a line (not the // of a URL).
var comment = regexp.MustCompile(`(^|\s)//.*$`)

// declarations returns the code lines of go doc -all's output, without
// comments: it drops the package doc (everything before the first section),
// the section headings, and the doc text (lines indented by spaces).
func declarations(doc string) []string {
	var decls []string
	inSections := false
	for line := range strings.Lines(doc) {
		line = strings.TrimRight(line, "\n")
		switch line {
		case "CONSTANTS", "VARIABLES", "FUNCTIONS", "TYPES":
			inSections = true
			continue
		}
		if !inSections || strings.HasPrefix(line, " ") {
			continue
		}
		if code := strings.TrimSpace(comment.ReplaceAllString(line, "")); code != "" {
			decls = append(decls, code)
		}
	}
	return decls
}

func TestDeclarations(t *testing.T) {
	t.Parallel()
	doc := `package broker // import "example.com/pkg/broker"

Package broker speaks internal/proto and wire.Job in its package doc.

CONSTANTS

const URL = "nats://127.0.0.1:4222" // a URL, not a comment

TYPES

type Job struct {
	// Wire is a wire.Job in a field comment.
	Wire  wire.Job
	Plain string // proto.Message in a trailing comment
}
    Job mentions agent.Agent and internal/agent in its doc.

type Alias = proto.Message
`
	require.Equal(t, []string{
		`const URL = "nats://127.0.0.1:4222"`,
		`type Job struct {`,
		`Wire  wire.Job`,
		`Plain string`,
		`}`,
		`type Alias = proto.Message`,
	}, declarations(doc))
	internal := internalRef([]string{"wire", "proto", "agent"})
	var found []string
	for _, d := range declarations(doc) {
		if internal.MatchString(d) {
			found = append(found, d)
		}
	}
	require.Equal(t, []string{`Wire  wire.Job`, `type Alias = proto.Message`}, found)
}
