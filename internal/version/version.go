// Package version tells which build of conductor is running, from the
// build information the Go toolchain writes into every binary: the
// module's version when built with go install of a tagged release, else
// the VCS revision and time that go build records in a checkout.
package version

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// revision and modified are set by make build's -ldflags -X from git, for
// the builds where Go records no VCS information (-buildvcs=false, or a
// source tree without .git); what Go records wins.
var revision, modified string

// Info is one binary's build.
type Info struct {
	Version  string `json:"version"`            // the module version, or "devel"
	Revision string `json:"revision,omitempty"` // VCS revision, 12 hex digits
	Time     string `json:"time,omitempty"`     // VCS commit time, RFC 3339
	Modified bool   `json:"modified,omitempty"` // the checkout had uncommitted changes
	Go       string `json:"go"`                 // the Go version it was built with
}

// Get reads the running binary's build information.
func Get() Info {
	info := Info{Version: "devel", Go: runtime.Version()}
	info.Revision, info.Modified = revision[:min(12, len(revision))], modified == "true"
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return info
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		info.Version = v
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			info.Revision = s.Value[:min(12, len(s.Value))]
		case "vcs.time":
			info.Time = s.Value
		case "vcs.modified":
			info.Modified = s.Value == "true"
		}
	}
	return info
}

// String is the one line --version prints after the binary's name, such
// as "devel 5e615bd0a1b2 (2026-12-05T01:37:00Z, modified) go1.26.0".
func (i Info) String() string {
	s := i.Version
	if i.Revision != "" {
		s += " " + i.Revision
		if i.Time != "" || i.Modified {
			s += " ("
			if i.Time != "" {
				s += i.Time
			}
			if i.Modified {
				if i.Time != "" {
					s += ", "
				}
				s += "modified"
			}
			s += ")"
		}
	}
	return fmt.Sprintf("%s %s", s, i.Go)
}
