package version

import (
	"runtime"
	"strings"
	"testing"
)

func TestGet_NamesTheGoVersion(t *testing.T) {
	info := Get()
	if info.Go != runtime.Version() {
		t.Fatalf("Go = %q, want %q", info.Go, runtime.Version())
	}
	if info.Version == "" {
		t.Fatal("Version is empty; want the module version or devel")
	}
}

func TestInfo_String(t *testing.T) {
	for _, tc := range []struct {
		info Info
		want string
	}{
		{Info{Version: "v1.2.3", Go: "go1.26.0"}, "v1.2.3 go1.26.0"},
		{Info{Version: "devel", Revision: "5e615bd0a1b2", Go: "go1.26.0"}, "devel 5e615bd0a1b2 go1.26.0"},
		{Info{Version: "devel", Revision: "5e615bd0a1b2", Time: "2026-12-05T01:37:00Z", Modified: true, Go: "go1.26.0"},
			"devel 5e615bd0a1b2 (2026-12-05T01:37:00Z, modified) go1.26.0"},
		{Info{Version: "devel", Revision: "5e615bd0a1b2", Modified: true, Go: "go1.26.0"}, "devel 5e615bd0a1b2 (modified) go1.26.0"},
	} {
		if got := tc.info.String(); got != tc.want {
			t.Errorf("%+v: got %q, want %q", tc.info, got, tc.want)
		}
		if strings.Contains(tc.info.String(), "\n") {
			t.Errorf("String has a newline")
		}
	}
}
