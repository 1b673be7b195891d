package metrics

import (
	"context"
	"time"

	"github.com/conductor-run/conductor/pkg/client"
	"github.com/conductor-run/conductor/pkg/conductor"
)

// ConductorSource is the Source of the Conductor *c, as conductord serves
// it: *c is read at each scrape, not now, so that the handler can go into
// the Config that builds the Conductor (set *c before serving).
// watchStorage adds the storage guard's gauges: set it for an embedded
// file store only (no NATSURL, no MemoryStorage), the one it watches.
// The caller sets StallAfter and MaxQueueAgeTypes.
func ConductorSource(c **conductor.Conductor, watchStorage bool) Source {
	src := Source{
		Pools:   func(ctx context.Context) ([]client.Pool, error) { return (*c).Pools(ctx) },
		Workers: func() []client.Worker { return (*c).Workers() },
		Strays: func() Strays {
			s := (*c).Strays()
			return Strays{Deleted: s.Deleted, Requeued: s.Requeued}
		},
		Heartbeats: func() HeartbeatDrops {
			d := (*c).Client().DroppedHeartbeats()
			return HeartbeatDrops{Full: d.Full, Oversize: d.Oversize, Malformed: d.Malformed}
		},
		Hosts: func() []client.Host { return (*c).Hosts() },
		Departures: func() HostDepartures {
			d := (*c).Client().DepartedHosts()
			return HostDepartures{Left: d.Left, Silent: d.Silent}
		},
		Leader: func() Leader {
			l := (*c).Leader()
			return Leader{Leading: l.Leading, Members: l.Members, Terms: l.Terms}
		},
		QueueAges: func(ctx context.Context, limit int) (map[string]time.Time, error) {
			return (*c).OldestQueued(ctx, limit)
		},
	}
	if watchStorage {
		src.Storage = func() Storage {
			s := (*c).Storage()
			return Storage{
				State: string(s.State), FreeBytes: s.FreeBytes, ReserveBytes: s.ReserveBytes,
				BallastBytes: s.BallastBytes, DrainBytesPerJob: uint64(s.DrainBytesPerJob),
				WriteErrors: s.WriteErrors, Restarts: s.Restarts, LostMessages: s.LostMessages(),
			}
		}
	}
	return src
}
