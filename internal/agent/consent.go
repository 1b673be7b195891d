package agent

import (
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/kballard/go-shellquote"

	"github.com/conductor-run/conductor/pkg/broker"
)

// What a host's own config lets the conductor's commands make it do. A
// command comes from whoever may publish on the host's control subject;
// workerd checks it against its own flags and config, which alone are
// trusted (docs/security.md, "Remote execution needs the host's consent").

// DefaultMaxPoolSize is the default of Config.MaxPoolSize.
const DefaultMaxPoolSize = 256

// maxShownCmd bounds a command line quoted in an error or a log line: the
// command of a refused upgrade is the caller's text.
const maxShownCmd = 200

// consent holds, per pool, the command lines an upgrade may name: the
// pool's cmd, then its upgrades, as the host's config gives them. Reload
// replaces them; commands read them.
type consent struct {
	mu      sync.Mutex
	allowed map[string][][]string // by pool name; guarded by mu
}

func newConsent(specs []broker.Spec) *consent {
	c := &consent{}
	c.set(specs)
	return c
}

// set replaces what every pool allows by what specs allow.
func (c *consent) set(specs []broker.Spec) {
	allowed := make(map[string][][]string, len(specs))
	for _, spec := range specs {
		cmds := make([][]string, 0, 1+len(spec.Upgrades))
		cmds = append(cmds, slices.Clone(spec.Cmd))
		for _, up := range spec.Upgrades {
			cmds = append(cmds, slices.Clone(up))
		}
		allowed[spec.Name] = cmds
	}
	c.mu.Lock()
	c.allowed = allowed
	c.mu.Unlock()
}

// checkUpgrade returns nil if the host's config allows pool, which runs
// current now, to be upgraded to cmd: cmd is, word for word, the pool's
// cmd, one of its upgrades, or current. Otherwise it says why not.
func (c *consent) checkUpgrade(host, pool string, current, cmd []string) error {
	c.mu.Lock()
	allowed := c.allowed[pool]
	c.mu.Unlock()
	if len(cmd) > 0 && slices.Equal(current, cmd) {
		return nil
	}
	if slices.ContainsFunc(allowed, func(ok []string) bool { return slices.Equal(ok, cmd) }) {
		return nil
	}
	if len(allowed) == 0 {
		allowed = [][]string{current}
	}
	why := fmt.Sprintf("its config allows no command but its cmd %s: list others under the pool's upgrades", showCmd(allowed[0]))
	if len(allowed) > 1 {
		shown := make([]string, len(allowed))
		for i, ok := range allowed {
			shown[i] = showCmd(ok)
		}
		why = "its config allows: " + strings.Join(shown, ", ")
	}
	return fmt.Errorf("upgrade refused by host %s: command %s is not one this host allows for pool %s (%s)",
		host, showCmd(cmd), pool, why)
}

// showCmd quotes a command line for a message, cut to maxShownCmd bytes.
func showCmd(cmd []string) string {
	s := shellquote.Join(cmd...)
	if len(s) > maxShownCmd {
		s = strings.ToValidUTF8(s[:maxShownCmd], "") + "…"
	}
	return fmt.Sprintf("%q", s)
}

// CheckPoolSizes returns an error naming the first pool of specs whose
// count is more than max (workerd checks a config file with it before it
// reloads it).
func CheckPoolSizes(specs []broker.Spec, max int) error {
	for _, spec := range specs {
		if spec.Count > max {
			return fmt.Errorf("agent: pool %q: count %d is more than this host's maximum pool size, %d (workerd --max-pool-size)", spec.Name, spec.Count, max)
		}
	}
	return nil
}

// checkResize returns an error if a resize to n workers is more than the
// host allows.
func (a *Agent) checkResize(n int) error {
	if n > a.cfg.MaxPoolSize {
		return fmt.Errorf("resize refused by host %s: count %d is more than this host's maximum pool size, %d (workerd --max-pool-size)", a.cfg.Host, n, a.cfg.MaxPoolSize)
	}
	return nil
}
