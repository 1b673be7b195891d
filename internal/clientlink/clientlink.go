// Package clientlink holds the one table of pool commands that pkg/client
// and the HTTP API of pkg/conductor share: the ops, and the fields each
// op takes. pkg/client checks a PoolCommand against it; the HTTP API
// routes POST /v1/pools/{name}/{op} by PoolOps and checks a command's
// body by CheckFields before it decodes the values, since a body can set
// a field to its zero value (count 0), which a PoolCommand cannot tell
// from unset. It is data and a pure function: no hooks, no state, and
// nothing of it appears in an exported signature (pkg/client wraps it).
package clientlink

import (
	"fmt"
	"slices"
	"strings"
)

// PoolOps lists every pool command op, in the order the docs list them.
var PoolOps = []string{"drain", "resume", "recycle", "restart", "resize", "upgrade", "shutdown"}

// opFields lists the fields (by their JSON names: count, cmd, health,
// timeout) each op takes; any other set field is an error.
var opFields = map[string][]string{
	"drain":    {"timeout"},
	"restart":  {"timeout"},
	"resize":   {"count"},
	"upgrade":  {"cmd", "health"},
	"shutdown": {"timeout"},
}

// CheckFields reports the first field in set, by its JSON name, that op
// does not take. Callers wrap the error in client.ErrBadCommand.
func CheckFields(op string, set []string) error {
	for _, f := range set {
		if slices.Contains(opFields[op], f) {
			continue
		}
		if len(opFields[op]) == 0 {
			return fmt.Errorf("%s takes no %s (it takes no fields)", op, f)
		}
		return fmt.Errorf("%s takes no %s (it takes %s)", op, f, strings.Join(opFields[op], ", "))
	}
	return nil
}
