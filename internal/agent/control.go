package agent

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/conductor-run/conductor/internal/subject"
	"github.com/conductor-run/conductor/internal/wire"
	"github.com/conductor-run/conductor/pkg/broker"
)

// DefaultLogRate is the default of Config.LogRate.
const DefaultLogRate = 1000

// command answers one wire.Command from the conductor. It runs on the
// subscription's goroutine, so it only checks the command, replies, and
// leaves the work to a goroutine of the agent.
func (a *Agent) command(m *nats.Msg) {
	var cmd wire.Command
	reply := wire.CommandReply{Host: a.cfg.Host}
	err := json.Unmarshal(m.Data, &cmd)
	if err == nil {
		reply.Pool = cmd.Pool
		if cmd.Op == wire.CommandMessage || cmd.Op == wire.CommandBroadcast {
			reply.Delivered, err = a.deliver(cmd)
		} else {
			err = a.accept(cmd)
		}
	}
	if err != nil {
		reply.Error = err.Error()
		a.log.Warn("command refused", "op", cmd.Op, "pool", cmd.Pool, "err", err)
	} else {
		reply.OK = true
		a.log.Info("command accepted", "op", cmd.Op, "pool", cmd.Pool)
	}
	data, _ := json.Marshal(reply)
	// An answer goes to an inbox only: the requester names the reply
	// subject, and the host's answer must not be a write it may not make.
	if subject.IsInbox(m.Reply) {
		if err := m.Respond(data); err != nil {
			a.log.Warn("cannot answer a command", "err", err)
		}
	}
}

// maxUpgradeHealth bounds the health period an upgrade's caller asks for:
// the pool's commands, and the host's own reload, wait for it.
const maxUpgradeHealth = 10 * time.Minute

// accept checks cmd and starts it, or says why not.
func (a *Agent) accept(cmd wire.Command) error {
	if cmd.Pool == wire.AllPools {
		return a.acceptAll(cmd)
	}
	p := a.findPool(cmd.Pool)
	if p == nil {
		return fmt.Errorf("no pool %q on host %s", cmd.Pool, a.cfg.Host)
	}
	bp, _ := p.running()
	if bp == nil {
		return fmt.Errorf("pool %q has not started yet", cmd.Pool)
	}
	if st := bp.Info().State; st == broker.PoolStopping || st == broker.PoolStopped {
		return fmt.Errorf("pool %q is %s", cmd.Pool, st)
	}
	timeout := time.Duration(cmd.Timeout)
	var run func(context.Context) error
	switch cmd.Op {
	case wire.CommandDrain:
		run = func(ctx context.Context) error {
			// The jobs held ahead go back at once, for other hosts; the
			// workers finish the ones they run.
			if _, src := p.running(); src != nil {
				src.pause()
			}
			return bp.Drain(ctx, timeout)
		}
	case wire.CommandResume:
		run = func(ctx context.Context) error {
			// The pool's commands run one at a time: a resume sent during a
			// drain runs once the drain has ended. Only then does the
			// source take jobs again.
			if err := bp.Resume(ctx); err != nil {
				return err
			}
			if _, src := p.running(); src != nil {
				src.resume()
			}
			return nil
		}
	case wire.CommandRecycle:
		run = bp.Recycle
	case wire.CommandRestart:
		run = func(ctx context.Context) error { return bp.Restart(ctx, timeout) }
	case wire.CommandResize:
		if cmd.Count < 0 {
			return fmt.Errorf("resize: count %d is negative", cmd.Count)
		}
		if err := a.checkResize(cmd.Count); err != nil {
			return err
		}
		run = func(ctx context.Context) error {
			if _, src := p.running(); src != nil {
				src.resize(cmd.Count)
			}
			return bp.Resize(ctx, cmd.Count)
		}
	case wire.CommandUpgrade:
		if h := time.Duration(cmd.Health); h > maxUpgradeHealth {
			return fmt.Errorf("upgrade: health %s is over this host's limit of %s", h, maxUpgradeHealth)
		}
		// Whoever sent it, the host runs only what its own config allows.
		if err := a.consent.checkUpgrade(a.cfg.Host, cmd.Pool, bp.Spec().Cmd, cmd.Cmd); err != nil {
			return err
		}
		if err := bp.CheckCommand(cmd.Cmd); err != nil {
			return fmt.Errorf("upgrade: %w", err)
		}
		run = func(ctx context.Context) error { return bp.Upgrade(ctx, cmd.Cmd, time.Duration(cmd.Health)) }
	case wire.CommandShutdown:
		run = func(context.Context) error {
			bp.Shutdown(timeout)
			return nil
		}
	default:
		return fmt.Errorf("unknown command %q", cmd.Op)
	}
	return a.goOp(cmd, run)
}

// acceptAll starts cmd on every running pool of the host. Only the
// commands that need nothing pool-specific can go to all.
func (a *Agent) acceptAll(cmd wire.Command) error {
	switch cmd.Op {
	case wire.CommandDrain, wire.CommandResume, wire.CommandRecycle, wire.CommandRestart, wire.CommandShutdown:
	default:
		return fmt.Errorf("%s goes to one pool at a time, not to all", cmd.Op)
	}
	var errs []error
	started := 0
	for _, p := range a.poolList() {
		one := cmd
		one.Pool = p.spec.Name
		if bp, _ := p.running(); bp == nil {
			continue // not started: nothing to drain, recycle or stop
		}
		if err := a.accept(one); err != nil {
			errs = append(errs, err)
			continue
		}
		started++
	}
	if started == 0 {
		return fmt.Errorf("no running pool on host %s: %w", a.cfg.Host, errors.Join(errs...))
	}
	return nil
}

// goOp runs one accepted command on a goroutine of the agent.
func (a *Agent) goOp(cmd wire.Command, run func(context.Context) error) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closing {
		return errors.New("workerd is stopping")
	}
	a.wg.Go(func() {
		if err := run(a.ctx); err != nil && a.ctx.Err() == nil {
			a.log.Error("command failed", "op", cmd.Op, "pool", cmd.Pool, "err", err)
		}
	})
	return nil
}

// publishEvent announces a broker event on its subject.
func (a *Agent) publishEvent(event broker.Event) {
	e := wireEvent(event)
	data, err := json.Marshal(e)
	if err != nil {
		a.log.Error("encode event", "err", err)
		return
	}
	subj := a.space.PoolEvent(e.Pool, e.Kind)
	switch e.Kind {
	case wire.EventWorkerStart, wire.EventWorkerReady, wire.EventWorkerExit, wire.EventWorkerMessage:
		subj = a.space.WorkerEvent(e.Pool, e.Kind)
	}
	if err := a.cfg.Conn.Publish(subj, data); err != nil {
		a.log.Debug("publish event", "err", err)
	}
}

// Reload applies a new set of pool specs: pools not in specs stop, new
// ones start, and each changed one is updated in place with rolling
// replacements (broker.Pool.Update); what an upgrade command may name is
// what specs allow from now on. It returns once every change has been
// made, or with the first error of each pool joined; a pool whose update
// failed keeps running as it was.
func (a *Agent) Reload(ctx context.Context, specs []broker.Spec) error {
	if err := checkSpecs(specs); err != nil {
		return err
	}
	if err := CheckPoolSizes(specs, a.cfg.MaxPoolSize); err != nil {
		return err
	}
	a.mu.Lock()
	if a.closing || a.ctx == nil {
		a.mu.Unlock()
		return errors.New("agent: not running")
	}
	a.consent.set(specs) // before the pools change: the file is the truth from now on
	want := map[string]broker.Spec{}
	for _, spec := range specs {
		want[spec.Name] = spec
	}
	var gone, changed []*pool
	have := map[string]bool{}
	for _, p := range a.pools {
		have[p.spec.Name] = true
		if _, ok := want[p.spec.Name]; ok {
			changed = append(changed, p)
		} else {
			gone = append(gone, p)
		}
	}
	for _, spec := range specs {
		if !have[spec.Name] {
			a.log.Info("reload: new pool", "pool", spec.Name)
			a.startPoolLocked(spec)
		}
	}
	a.mu.Unlock()

	var errs []error
	var wg sync.WaitGroup
	var mu sync.Mutex
	for _, p := range gone {
		a.log.Info("reload: stopping pool", "pool", p.spec.Name)
		wg.Go(func() { a.removePool(p) })
	}
	for _, p := range changed {
		wg.Go(func() {
			if err := a.updatePool(ctx, p, want[p.spec.Name]); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// updatePool applies spec to p if it changed. A pool whose name, protocol
// or listen address changed is replaced by a new one.
func (a *Agent) updatePool(ctx context.Context, p *pool, spec broker.Spec) error {
	bp, src := p.running()
	if bp == nil {
		// Waiting for the job stream, or its command could not start (a
		// fix in the file is what the reload brings): start it afresh.
		a.log.Info("reload: pool not running; starting it with the new spec", "pool", spec.Name)
		return a.replacePool(p, spec)
	}
	cur := bp.Spec()
	next := spec
	next.Count = cmp.Or(next.Count, broker.DefaultCount)
	if cmp.Or(next.Protocol, broker.ProtocolChannel) != cur.Protocol || next.Listen != cur.Listen {
		a.log.Info("reload: pool protocol or listen changed; replacing the pool", "pool", spec.Name)
		return a.replacePool(p, spec)
	}
	if src != nil {
		src.resize(next.Count)
		src.setLimits(cmp.Or(next.MaxAttempts, broker.DefaultMaxAttempts), cmp.Or(next.MaxCrashes, broker.DefaultMaxCrashes))
	}
	if err := bp.Update(ctx, next, 0); err != nil {
		return fmt.Errorf("pool %q: %w", spec.Name, err)
	}
	return nil
}

// replacePool stops p and starts a pool of spec in its place.
func (a *Agent) replacePool(p *pool, spec broker.Spec) error {
	a.removePool(p)
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.closing {
		a.startPoolLocked(spec)
	}
	return nil
}
