package agent

import (
	"errors"
	"fmt"

	"github.com/conductor-run/conductor/internal/wire"
	"github.com/conductor-run/conductor/pkg/broker"
)

// deliver queues the message of cmd (wire.CommandMessage) for one
// worker, or of a broadcast (wire.CommandBroadcast) for every worker of
// a pool, or of every pool (wire.AllPools), and returns how many workers
// it was queued for. A message to a worker the host does not run is
// refused "no such worker".
func (a *Agent) deliver(cmd wire.Command) (int, error) {
	if cmd.Op == wire.CommandBroadcast && cmd.Pool == wire.AllPools {
		n := 0
		for _, bp := range a.runningPools() {
			k, err := bp.Broadcast(cmd.Data)
			if err != nil {
				return n, err
			}
			n += k
		}
		return n, nil
	}
	p := a.findPool(cmd.Pool)
	var bp *broker.Pool
	if p != nil {
		bp, _ = p.running()
	}
	if bp == nil {
		if cmd.Op == wire.CommandMessage {
			return 0, fmt.Errorf("no such worker: host %s runs no pool %q", a.cfg.Host, cmd.Pool)
		}
		return 0, fmt.Errorf("no pool %q running on host %s", cmd.Pool, a.cfg.Host)
	}
	if cmd.Op == wire.CommandBroadcast {
		return bp.Broadcast(cmd.Data)
	}
	if cmd.Worker == nil {
		return 0, errors.New("message: no worker named")
	}
	if err := bp.SendMessage(*cmd.Worker, cmd.Data); err != nil {
		if errors.Is(err, broker.ErrNoWorker) {
			return 0, fmt.Errorf("no such worker: host %s runs no worker %d of pool %q", a.cfg.Host, *cmd.Worker, cmd.Pool)
		}
		return 0, err
	}
	return 1, nil
}
