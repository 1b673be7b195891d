// The supervisor goroutine of a pool (supervise): it carries out the
// commands of commands.go one at a time and recycles the workers that are
// due for it, until the pool stops; every function here runs on it. It
// adds and retires slots, and changes the pool's state, count, generation,
// operation, last error and restart budget under Pool.mu; it waits for
// slots on their channels (readyC, exitC, ended), never under a lock. How
// a slot restarts its process is the slot's (slot.go, restart.go), not the
// supervisor's.

package broker

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"time"
)

// supervise is the supervisor goroutine: it runs commands one at a time
// and recycles workers that asked for it or outgrew their limits, until the
// pool stops. It is the pool's (see Pool), not a service of its own: Start
// starts it in slotWG and intake ends it.
func (p *Pool) supervise(sp *spawner) {
	tick := time.NewTicker(p.test.checkInterval)
	defer tick.Stop()
	for {
		select {
		case <-p.intake.Done():
			return
		case o := <-p.ops:
			o.done <- p.run(sp, o)
		case <-p.poke:
			p.recycleDue(sp)
		case <-tick.C:
			p.recycleDue(sp)
		}
	}
}

// run carries out one command.
func (p *Pool) run(sp *spawner, o *op) error {
	switch o.kind {
	case cmdDrain:
		return p.drain(o.timeout)
	case cmdResume:
		return p.resume(sp)
	case cmdRecycle:
		return p.recycleAll(sp)
	case cmdRestart:
		if err := p.drain(o.timeout); err != nil {
			return err
		}
		return p.resume(sp)
	case cmdResize:
		return p.resize(sp, o.count)
	case cmdUpgrade:
		return p.update(sp, o.spec, o.health)
	}
	return fmt.Errorf("broker: unknown command %q", o.kind)
}

// current returns the slots that are not retiring, in index order.
func (p *Pool) current() []*slot {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []*slot
	for _, s := range p.slots {
		if s.ctx.Err() == nil {
			out = append(out, s)
		}
	}
	slices.SortStableFunc(out, func(a, b *slot) int { return a.index - b.index })
	return out
}

// setState sets the pool's state unless it is stopping.
func (p *Pool) setState(state PoolState) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.state == PoolStopping || p.state == PoolStopped {
		return false
	}
	p.state = state
	return true
}

// drain retires every slot and waits for them to end.
func (p *Pool) drain(timeout time.Duration) error {
	if !p.setState(PoolDraining) {
		return ErrStopped
	}
	slots := p.current()
	for _, s := range slots {
		s.retire(ReasonStop, timeout)
	}
	if !p.awaitEnd(slots) {
		return ErrStopped
	}
	p.setState(PoolDrained)
	p.log.Info("pool drained")
	p.emit(Event{Kind: EventPoolDrained})
	return nil
}

// resume starts Count slots in a pool without any.
func (p *Pool) resume(sp *spawner) error {
	p.mu.Lock()
	if p.state != PoolDrained {
		p.mu.Unlock()
		return nil
	}
	p.state = PoolRunning
	n := p.count
	for i := range n {
		p.addSlotLocked(sp, i, ReasonStart, p.gen)
	}
	p.mu.Unlock()
	p.log.Info("pool resumed", "count", n)
	p.emit(Event{Kind: EventPoolResumed, Count: n})
	return nil
}

// resize starts or retires slots so that n run.
func (p *Pool) resize(sp *spawner, n int) error {
	p.mu.Lock()
	old := p.count
	p.count = n
	drained := p.state == PoolDrained
	p.mu.Unlock()
	if !drained {
		for i := old; i < n; i++ {
			p.addSlot(sp, i, ReasonResize, p.generation())
		}
		var surplus []*slot
		for _, s := range p.current() {
			if s.index >= n {
				s.retire(ReasonResize, 0)
				surplus = append(surplus, s)
			}
		}
		if !p.awaitEnd(surplus) {
			return ErrStopped
		}
	}
	p.log.Info("pool resized", "from", old, "to", n)
	p.emit(Event{Kind: EventPoolResized, Count: n})
	return nil
}

func (p *Pool) generation() *generation {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.gen
}

func (p *Pool) setOperation(name Operation) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.operation = name
}

// recycleAll replaces every current slot, one at a time.
func (p *Pool) recycleAll(sp *spawner) error {
	p.setOperation(OpRecycle)
	defer p.setOperation("")
	for _, s := range p.current() {
		if err := p.replace(sp, s, ReasonRecycle, p.generation(), 0); err != nil {
			if errors.Is(err, ErrStopped) {
				return err
			}
			p.log.Warn("recycle: replacement not ready; the worker stays", "index", s.index, "err", err)
		}
	}
	p.log.Info("pool recycled")
	p.emit(Event{Kind: EventPoolRecycled, Count: len(p.current())})
	return nil
}

// recycleDue replaces, one at a time, the workers that asked for it (max
// jobs) or are over their age or memory limit.
func (p *Pool) recycleDue(sp *spawner) {
	for p.intake.Err() == nil {
		s := p.dueForRecycle()
		if s == nil {
			return
		}
		if err := p.replace(sp, s, ReasonRecycle, s.gen, 0); err != nil {
			p.log.Warn("recycle: replacement not ready; the worker stays for now", "index", s.index, "err", err)
			return // try again at the next check
		}
	}
}

// dueForRecycle returns a slot that should be recycled now, or nil.
func (p *Pool) dueForRecycle() *slot {
	for _, s := range p.current() {
		if why := s.recycleReason(); why != "" {
			s.log.Info("recycling worker", "why", why)
			return s
		}
	}
	return nil
}

// replace starts a slot at old's index running gen, waits for its first
// ready and then health more without an exit, and retires old. If the new
// worker fails, it is retired instead and old stays. replace returns once
// the retired one has ended.
func (p *Pool) replace(sp *spawner, old *slot, reason Reason, gen *generation, health time.Duration) error {
	ready := gen.spec.ReadyTimeout + gen.spec.KillTimeout
	n := p.addSlot(sp, old.index, reason, gen)
	err := p.awaitHealthy(n, ready, health)
	retired := old
	if err != nil {
		retired = n
	}
	retired.retire(reason, 0)
	if !p.awaitEnd([]*slot{retired}) {
		return ErrStopped
	}
	return err
}

// awaitHealthy waits for s's first ready within limit, then for health to
// pass with its process still up.
func (p *Pool) awaitHealthy(s *slot, limit, health time.Duration) error {
	t := time.NewTimer(limit)
	defer t.Stop()
	select {
	case <-s.readyC:
	case <-s.exitC:
		return fmt.Errorf("new worker exited before it was ready (%s)", s.firstExit())
	case <-t.C:
		return fmt.Errorf("new worker not ready within %s", limit)
	case <-p.intake.Done():
		return ErrStopped
	}
	if health <= 0 {
		return nil
	}
	t.Reset(health)
	select {
	case <-t.C:
		return nil
	case <-s.exitC:
		return fmt.Errorf("new worker exited within the %s health period (%s)", health, s.firstExit())
	case <-p.intake.Done():
		return ErrStopped
	}
}

// awaitEnd waits for every slot of slots to end, or for the pool to stop
// (then it returns false).
func (p *Pool) awaitEnd(slots []*slot) bool {
	for _, s := range slots {
		select {
		case <-s.ended:
		case <-p.intake.Done():
			return false
		}
	}
	return true
}

// update rolls every worker to spec; see Update.
func (p *Pool) update(sp *spawner, spec Spec, health time.Duration) error {
	path, err := resolveCommand(spec.Cmd[0], spec.Dir)
	if err != nil {
		return fmt.Errorf("broker: upgrade pool %q: command %q: %w", p.spec.Name, spec.Cmd[0], err)
	}
	p.mu.Lock()
	old := p.gen
	p.breaker.Budget = spec.MaxRestartsPerMinute
	p.crashLoop.Budget, p.crashLoop.Window = spec.MaxFailedStarts, spec.FailedStartWindow
	p.mu.Unlock()
	if rollingChange(old.spec, spec) {
		next := &generation{spec: spec, path: path, version: old.version + 1}
		if err := p.roll(sp, old, next, health); err != nil {
			return err
		}
	}
	if p.Spec().Count != spec.Count {
		return p.resize(sp, spec.Count)
	}
	return nil
}

// rollingChange reports whether a and b differ in what a worker process
// is started or supervised with, which only a new process can take.
func rollingChange(a, b Spec) bool {
	a.Count, b.Count = 0, 0
	a.MaxRestartsPerMinute, b.MaxRestartsPerMinute = 0, 0
	a.MaxFailedStarts, b.MaxFailedStarts = 0, 0
	a.FailedStartWindow, b.FailedStartWindow = 0, 0
	a.MaxAttempts, b.MaxAttempts = 0, 0
	a.MaxCrashes, b.MaxCrashes = 0, 0
	a.Upgrades, b.Upgrades = nil, nil // workerd's consent, not the process's
	return !reflect.DeepEqual(a, b)
}

// roll replaces every worker of old by one of next, one at a time; the
// first must stay healthy for health. A failure rolls the change back.
func (p *Pool) roll(sp *spawner, old, next *generation, health time.Duration) error {
	if health <= 0 {
		health = DefaultUpgradeHealth
	}
	p.setOperation(OpUpgrade)
	defer p.setOperation("")
	slots := p.current()
	var upgraded []*slot
	for i, s := range slots {
		h := time.Duration(0)
		if i == 0 {
			h = health
		}
		err := p.replace(sp, s, ReasonUpgrade, next, h)
		if errors.Is(err, ErrStopped) {
			return err
		}
		if err != nil {
			p.rollback(sp, upgraded, old, err)
			return fmt.Errorf("broker: upgrade pool %q rolled back: %w", p.spec.Name, err)
		}
		if i == 0 {
			p.mu.Lock()
			p.gen = next // restarts and new slots run the new version from now on
			p.mu.Unlock()
			p.setLimits(next.spec) // the pool's cpu and pids, at once
		}
		upgraded = append(upgraded, p.slotAt(s.index, next))
	}
	p.mu.Lock()
	p.gen, p.lastErr = next, ""
	p.mu.Unlock()
	p.log.Info("pool upgraded", "cmd", next.spec.Cmd, "version", next.version)
	p.emit(Event{Kind: EventPoolUpgraded, Count: len(slots)})
	return nil
}

// slotAt returns the current slot at index running gen, or nil.
func (p *Pool) slotAt(index int, gen *generation) *slot {
	for _, s := range p.current() {
		if s.index == index && s.gen == gen {
			return s
		}
	}
	return nil
}

// rollback puts old back: the pool's command, then the workers already
// upgraded, one at a time.
func (p *Pool) rollback(sp *spawner, upgraded []*slot, old *generation, cause error) {
	p.mu.Lock()
	p.gen = old
	p.lastErr = "upgrade rolled back: " + cause.Error()
	p.mu.Unlock()
	p.setLimits(old.spec)
	p.log.Error("upgrade failed; rolling back", "err", cause, "upgraded", len(upgraded))
	for _, s := range upgraded {
		if s == nil {
			continue
		}
		if err := p.replace(sp, s, ReasonUpgrade, old, 0); err != nil {
			p.log.Error("rollback: replacement not ready", "index", s.index, "err", err)
		}
	}
	p.emit(Event{Kind: EventPoolRollback, Error: cause.Error(), Count: len(p.current())})
}
