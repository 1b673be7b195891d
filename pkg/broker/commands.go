// The pool's commands, as its users call them. Drain, Resume, Recycle,
// Restart, Resize, Upgrade and Update run on the caller's goroutine only as
// far as do, which hands an op to the pool's supervisor goroutine on
// Pool.ops and waits for its result (supervisor.go carries it out).
// CheckCommand and Cancel do not go through the supervisor: Cancel sends
// the job id to the slot that holds it, on slot.cancelC, for its session.

package broker

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"
)

// DefaultUpgradeHealth is how long the first worker of an upgrade must stay
// up after its first ready before the others are replaced, when Upgrade is
// given no health period.
const DefaultUpgradeHealth = 5 * time.Second

// command names what an op does.
type command string

// The commands of the supervisor, named as workerd's pool commands are.
const (
	cmdDrain   command = "drain"
	cmdResume  command = "resume"
	cmdRecycle command = "recycle"
	cmdRestart command = "restart"
	cmdResize  command = "resize"
	cmdUpgrade command = "upgrade"
)

// op is one command for the supervisor.
type op struct {
	kind    command
	count   int
	spec    Spec // for upgrade: the whole new spec
	health  time.Duration
	timeout time.Duration
	done    chan error // buffered; gets the command's result
}

// Drain stops the pool's workers without stopping the pool: no worker takes
// a new job, each finishes the one it runs within timeout (zero means
// StopTimeout) and stops. The pool stays drained, with no process, until
// Resume. Drain returns when every worker has stopped or ctx ends; the
// drain goes on regardless.
func (p *Pool) Drain(ctx context.Context, timeout time.Duration) error {
	return p.do(ctx, &op{kind: cmdDrain, timeout: timeout})
}

// Resume starts the workers of a drained pool again. On a running pool it
// does nothing.
func (p *Pool) Resume(ctx context.Context) error {
	return p.do(ctx, &op{kind: cmdResume})
}

// Recycle replaces every worker, one at a time: a new process is started
// and, once it is ready, the old one is stopped gracefully, so the pool
// never has fewer ready workers than Count-1 and no job is lost. It
// returns when every worker was replaced or ctx ends; the recycle goes on
// regardless.
func (p *Pool) Recycle(ctx context.Context) error {
	return p.do(ctx, &op{kind: cmdRecycle})
}

// Restart stops every worker gracefully (in-flight jobs get timeout, zero
// meaning StopTimeout), then starts Count new ones.
func (p *Pool) Restart(ctx context.Context, timeout time.Duration) error {
	return p.do(ctx, &op{kind: cmdRestart, timeout: timeout})
}

// Resize sets the number of workers to n: new workers start at once;
// surplus ones, the highest indexes first, stop gracefully.
func (p *Pool) Resize(ctx context.Context, n int) error {
	if n < 0 {
		return fmt.Errorf("broker: resize pool %q: count %d is negative", p.spec.Name, n)
	}
	return p.do(ctx, &op{kind: cmdResize, count: n})
}

// Upgrade replaces every worker, one at a time, by one running cmd. The
// first new worker must say ready and then stay up for health (zero means
// DefaultUpgradeHealth) while the old one still serves; if it does not,
// the upgrade is rolled back and Upgrade returns the reason. A later new
// worker that fails to get ready rolls back the workers already upgraded.
// Either way a rollback event is announced.
func (p *Pool) Upgrade(ctx context.Context, cmd []string, health time.Duration) error {
	spec := p.Spec()
	spec.Cmd = slices.Clone(cmd)
	if err := spec.Validate(); err != nil {
		return fmt.Errorf("broker: upgrade: %w", err)
	}
	return p.do(ctx, &op{kind: cmdUpgrade, spec: spec, health: health})
}

// Update applies spec to the pool, as a reload of its configuration does.
// Name, Protocol and Listen cannot change (that takes a new pool). A change
// of Count resizes the pool; a change of anything a process is started or
// supervised with (Cmd, Env, Dir, timeouts, restart and recycle settings)
// replaces the workers one at a time as Upgrade does, rolled back likewise;
// MaxRestartsPerMinute, MaxFailedStarts, FailedStartWindow and
// MaxAttempts apply at once.
func (p *Pool) Update(ctx context.Context, spec Spec, health time.Duration) error {
	if err := spec.Validate(); err != nil {
		return err
	}
	spec = spec.withDefaults()
	if spec.Name != p.spec.Name || spec.Protocol != p.spec.Protocol || spec.Listen != p.spec.Listen {
		return fmt.Errorf("broker: update pool %q: name, protocol and listen cannot change; stop the pool and start a new one", p.spec.Name)
	}
	return p.do(ctx, &op{kind: cmdUpgrade, spec: spec, health: health})
}

// CheckCommand reports whether cmd could start a worker of the pool: its
// program exists and is executable (looked up as Start does).
func (p *Pool) CheckCommand(cmd []string) error {
	if len(cmd) == 0 || cmd[0] == "" {
		return errors.New("empty command")
	}
	_, err := resolveCommand(cmd[0], p.Spec().Dir)
	return err
}

// Cancel tells the worker running job id, if any, to stop it: the cancel
// op, then, if the job has not ended KillTimeout later, SIGTERM and SIGKILL
// of its process group (whose slot then starts a new process at once). A job
// queued in a worker (the prefetch of its ready op) is sent the
// cancel op alone. The job's outcome is reported as usual; the Source
// decides what a cancelled job becomes. Cancel reports whether a worker of
// the pool held the job.
func (p *Pool) Cancel(id string) bool {
	p.mu.Lock()
	slots := slices.Clone(p.slots)
	p.mu.Unlock()
	for _, s := range slots {
		if !s.holds(id) {
			continue
		}
		select {
		case s.cancelC <- id:
		default: // a cancel is pending already
		}
		return true
	}
	return false
}

// do hands o to the supervisor and waits for its result.
func (p *Pool) do(ctx context.Context, o *op) error {
	p.mu.Lock()
	state := p.state
	p.mu.Unlock()
	if state == PoolNew {
		return fmt.Errorf("%w: %q", ErrNotStarted, p.spec.Name)
	}
	o.done = make(chan error, 1)
	select {
	case p.ops <- o:
	case <-p.intake.Done():
		return fmt.Errorf("%w: %q", ErrStopped, p.spec.Name)
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-o.done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}
