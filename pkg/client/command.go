package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/conductor-run/conductor/internal/logtail"
	"github.com/conductor-run/conductor/internal/subject"
	"github.com/conductor-run/conductor/internal/wire"
)

// PoolOp names a command to a pool.
type PoolOp string

// The commands a pool takes. A host answers at once whether it accepted the
// command; the command's effect then shows in GET /v1/pools, GET /v1/workers
// and the events.
const (
	OpDrain    PoolOp = "drain"    // stop taking jobs, finish in-flight ones, stop the workers
	OpResume   PoolOp = "resume"   // start the workers of a drained pool again
	OpRecycle  PoolOp = "recycle"  // replace every worker, one at a time (hot reload)
	OpRestart  PoolOp = "restart"  // stop every worker gracefully, then start them all again
	OpResize   PoolOp = "resize"   // run Count workers
	OpUpgrade  PoolOp = "upgrade"  // rolling replacement with the command line Cmd
	OpShutdown PoolOp = "shutdown" // stop the pool for good, within Timeout
)

// AllPools, as the pool of a Command, sends it to every pool of every
// live host (or of the one host named): drain, resume, recycle, restart
// and shutdown only.
const AllPools = "*"

// allPoolsOps are the ops that AllPools takes.
var allPoolsOps = []PoolOp{OpDrain, OpResume, OpRecycle, OpRestart, OpShutdown}

// PoolCommand is one command to a pool, with the fields its Op takes.
type PoolCommand struct {
	Op PoolOp
	// Count is the new number of workers, for OpResize; 0 or more.
	Count int
	// Cmd is the new command line, for OpUpgrade: the program, then its
	// arguments.
	Cmd []string
	// Health is how long the first upgraded worker must stay up (and
	// ready) before the others are replaced, for OpUpgrade. Zero: the
	// host's default.
	Health time.Duration
	// Timeout is how long in-flight jobs get to finish before the workers
	// are stopped, for OpDrain, OpRestart and OpShutdown. Zero: the pool's
	// stop_timeout.
	Timeout time.Duration
}

// CommandResult is one host's answer to a PoolCommand.
type CommandResult struct {
	Host string `json:"host"`
	OK   bool   `json:"ok"`
	// Error says why the host refused, or why it gave no answer.
	Error string `json:"error,omitempty"`
	// Delivered is how many of the host's workers a message or broadcast
	// was queued for.
	Delivered int `json:"delivered,omitempty"`
}

// Command sends cmd to pool on every live host that runs it, or only on
// host if host is not empty, all at once, and returns each host's answer,
// sorted by host. It waits at most Config.CommandTimeout for each.
// With pool AllPools, the command goes to every pool of those hosts.
//
// The hosts are learnt from their heartbeats: the first Command of a Client
// starts listening to them and waits Config.HostWait before it trusts
// its list of live hosts.
//
// The error wraps ErrBadCommand for an invalid command, ErrPoolNotFound if
// no live host runs pool (or host does not), and ErrCommandRefused if no
// host accepted; with ErrCommandRefused the results say why.
func (c *Client) Command(ctx context.Context, pool string, cmd PoolCommand, host string) ([]CommandResult, error) {
	if err := c.forOperators("Command"); err != nil {
		return nil, err
	}
	wc, err := cmd.wire(pool)
	if err != nil {
		return nil, err
	}
	hosts, err := c.commandHosts(ctx, pool, host)
	if err != nil {
		return nil, err
	}
	results := c.fanOut(ctx, hosts, wc)
	if !slices.ContainsFunc(results, func(r CommandResult) bool { return r.OK }) {
		return results, fmt.Errorf("%w: %s of pool %q: %s", ErrCommandRefused, cmd.Op, pool, refusals(results))
	}
	return results, nil
}

// commandHosts returns the live hosts that run pool (only host, if set:
// a host id, else ErrBadCommand).
// A host already known is taken at once; otherwise the registry first
// listens long enough to have heard every host.
func (c *Client) commandHosts(ctx context.Context, pool, host string) ([]string, error) {
	if host != "" {
		if err := subject.Token("host id", host); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrBadCommand, err)
		}
	}
	r, err := c.hostRegistry()
	if err != nil {
		return nil, err
	}
	hosts := r.running(pool, host)
	if host == "" || len(hosts) == 0 {
		if err := r.await(ctx); err != nil {
			return nil, fmt.Errorf("conductor: learn the live hosts: %w", err)
		}
		hosts = r.running(pool, host)
	}
	switch {
	case len(hosts) > 0:
		return hosts, nil
	case host != "":
		return nil, fmt.Errorf("%w: host %q is not live or does not run pool %q", ErrPoolNotFound, host, pool)
	default:
		return nil, fmt.Errorf("%w: no live host runs pool %q", ErrPoolNotFound, pool)
	}
}

// fanOut sends cmd to every host at once and returns their answers in the
// order of hosts, once every host has answered or timed out.
func (c *Client) fanOut(ctx context.Context, hosts []string, cmd wire.Command) []CommandResult {
	data, _ := json.Marshal(cmd) // a wire.Command always encodes
	out := make([]CommandResult, len(hosts))
	var wg sync.WaitGroup
	for i, host := range hosts {
		wg.Go(func() { out[i] = c.ask(ctx, host, data) })
	}
	wg.Wait()
	return out
}

// request sends a command and waits for its answer, on a reply subject
// of its own (logtail.Request).
func (c *Client) request(ctx context.Context, subj string, data []byte) (*nats.Msg, error) {
	return logtail.Request(ctx, c.nc, subj, data)
}

// ask sends one encoded command to host and reads its answer.
func (c *Client) ask(ctx context.Context, host string, data []byte) CommandResult {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.CommandTimeout)
	defer cancel()
	res := CommandResult{Host: host}
	m, err := c.request(ctx, c.space.Control(host), data)
	switch {
	case errors.Is(err, nats.ErrNoResponders):
		res.Error = "workerd does not listen for commands"
		return res
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout):
		res.Error = fmt.Sprintf("no answer within %s", c.cfg.CommandTimeout)
		return res
	case err != nil:
		res.Error = "send command: " + err.Error()
		return res
	}
	var reply wire.CommandReply
	if err := json.Unmarshal(m.Data, &reply); err != nil {
		res.Error = "unreadable answer: " + err.Error()
		return res
	}
	res.OK, res.Error, res.Delivered = reply.OK, reply.Error, reply.Delivered
	if !res.OK && res.Error == "" {
		res.Error = "refused without a reason"
	}
	return res
}

// refusals sums up the hosts that did not accept a command.
func refusals(results []CommandResult) string {
	var b strings.Builder
	for _, r := range results {
		if r.OK {
			continue
		}
		if b.Len() > 0 {
			b.WriteString("; ")
		}
		fmt.Fprintf(&b, "%s: %s", r.Host, r.Error)
	}
	return b.String()
}

// wire checks cmd and returns it as the command to pool that hosts take.
func (cmd PoolCommand) wire(pool string) (wire.Command, error) {
	if pool == AllPools {
		if !slices.Contains(allPoolsOps, cmd.Op) {
			return wire.Command{}, fmt.Errorf("%w: %s goes to one pool at a time, not to all (%q)", ErrBadCommand, cmd.Op, AllPools)
		}
	} else if err := subject.Token("pool", pool); err != nil {
		return wire.Command{}, fmt.Errorf("%w: %w", ErrBadCommand, err)
	}
	if !slices.Contains(wire.CommandOps, string(cmd.Op)) {
		return wire.Command{}, fmt.Errorf("%w: unknown op %q", ErrBadCommand, cmd.Op)
	}
	if err := checkFields(cmd.Op, cmd.setFields()); err != nil {
		return wire.Command{}, err
	}
	switch {
	case cmd.Count < 0:
		return wire.Command{}, fmt.Errorf("%w: count must be 0 or more, not %d", ErrBadCommand, cmd.Count)
	case cmd.Op == OpUpgrade && (len(cmd.Cmd) == 0 || cmd.Cmd[0] == ""):
		return wire.Command{}, fmt.Errorf("%w: upgrade needs a command line", ErrBadCommand)
	case cmd.Health < 0:
		return wire.Command{}, fmt.Errorf("%w: health must not be negative, not %s", ErrBadCommand, cmd.Health)
	case cmd.Timeout < 0:
		return wire.Command{}, fmt.Errorf("%w: timeout must not be negative, not %s", ErrBadCommand, cmd.Timeout)
	}
	return wire.Command{
		Op:      string(cmd.Op),
		Pool:    pool,
		Count:   cmd.Count,
		Cmd:     cmd.Cmd,
		Health:  wire.Duration(cmd.Health),
		Timeout: wire.Duration(cmd.Timeout),
	}, nil
}

// setFields names the fields of cmd that are not zero.
func (cmd PoolCommand) setFields() []string {
	var set []string
	if cmd.Count != 0 {
		set = append(set, "count")
	}
	if cmd.Cmd != nil {
		set = append(set, "cmd")
	}
	if cmd.Health != 0 {
		set = append(set, "health")
	}
	if cmd.Timeout != 0 {
		set = append(set, "timeout")
	}
	return set
}

// checkFields reports a field in set that op does not take.
func checkFields(op PoolOp, set []string) error {
	if err := wire.CheckCommandFields(string(op), set); err != nil {
		return fmt.Errorf("%w: %w", ErrBadCommand, err)
	}
	return nil
}
