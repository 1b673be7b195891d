//go:build pprof

package profiling

import (
	"log"
	"net/http"
	_ "net/http/pprof" // the handlers this package exists to serve
	"os"
	"path/filepath"
	"strings"

	"github.com/conductor-run/conductor/internal/names"
)

func init() {
	// One variable per binary, so that several on one host can be profiled:
	// CONDUCTOR_PPROF_WORKERD=127.0.0.1:6062.
	addr := os.Getenv(names.EnvPprofPrefix + strings.ToUpper(filepath.Base(os.Args[0])))
	if addr == "" {
		return
	}
	go func() { log.Println(http.ListenAndServe(addr, nil)) }()
}
