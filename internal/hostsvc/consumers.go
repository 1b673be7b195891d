package hostsvc

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/conductor-run/conductor/internal/subject"
	"github.com/conductor-run/conductor/internal/wire"
)

// Each job type has a consumer per priority on the job stream, but a high
// or low one only once jobs of its priority have come: every consumer of
// the stream costs the server on every ack, whatever its type (the work
// queue asks each whether it still wants the message), so a type that
// never has high or low jobs pays for one consumer, not three.
// MakeConsumers makes the normal one when a pool starts, and the others
// whose jobs the stream holds then; conductord's leader makes the others
// as their jobs come (MakePriority); a host's fetcher finds them when it
// asks again (docs/architecture.md, "Consumers").

// MakeConsumers makes sure the consumers of job type typ exist with
// conductor's settings: the normal priority's, and the high and low
// priorities' that exist already or whose jobs the stream holds. Each is
// filtered on the subject of its jobs (which the server then holds it
// to), ackWait held to [wire.MinAckWait, wire.MaxAckWait] (30s if zero).
// A consumer's ack wait is only ever raised: the consumers are shared by
// every host of the type, and one asking for less must not make another's
// jobs, leased for its own ack wait, come again while they run. A
// consumer as asked already is left alone.
func MakeConsumers(ctx context.Context, js jetstream.JetStream, sp subject.Space, typ string, ackWait time.Duration) error {
	return makeConsumers(ctx, js, sp, typ, ackWait, false)
}

// MakeAllConsumers is MakeConsumers making all three consumers, whatever
// the stream holds: for a host from before consumers were made as their
// jobs come, whose fetcher asks conductord for all three while one is
// missing.
func MakeAllConsumers(ctx context.Context, js jetstream.JetStream, sp subject.Space, typ string, ackWait time.Duration) error {
	return makeConsumers(ctx, js, sp, typ, ackWait, true)
}

// typeLocks serializes the makers of a type's consumers within a
// conductord: a consumer's ack wait is raised by reading it, then writing
// the wait raised, so two makers at once (hosts starting together with
// different ack waits, the leader's MakePriority) must not interleave, or
// a read made before another's raise writes the lower wait back
// (TestAttack19e_ConcurrentHostsKeepTheLongestAckWait). A type takes one
// of a fixed set of mutexes by the hash of its stream and name, so that
// the locks do not grow with the types ever seen; two types that share one
// wait for each other's few requests. Conductords of a cluster answer
// hosts' requests from a queue group, and are not serialized by it
// (docs/reliability.md, "Known gaps of consumers").
var typeLocks [64]sync.Mutex

// lockType locks the makers of typ's consumers and returns the unlock.
func lockType(sp subject.Space, typ string) func() {
	h := fnv.New32a()
	h.Write([]byte(sp.JobStream()))
	h.Write([]byte{0})
	h.Write([]byte(typ))
	mu := &typeLocks[h.Sum32()%uint32(len(typeLocks))]
	mu.Lock()
	return mu.Unlock
}

func makeConsumers(ctx context.Context, js jetstream.JetStream, sp subject.Space, typ string, ackWait time.Duration, all bool) error {
	defer lockType(sp, typ)()
	if ackWait == 0 {
		ackWait = 30 * time.Second
	}
	ackWait = min(max(ackWait, wire.MinAckWait), wire.MaxAckWait)
	var held map[string]uint64 // the priorities' subjects with jobs, read once
	// The normal one first: the others lease for at least as long as it
	// does, which another host may have raised past ackWait (as
	// MakePriority makes them).
	for _, p := range []wire.Priority{wire.PriorityNormal, wire.PriorityHigh, wire.PriorityLow} {
		cfg := consumerConfig(sp, typ, p, ackWait)
		cons, err := js.Consumer(ctx, sp.JobStream(), cfg.Durable)
		switch {
		case err == nil:
			cur := cons.CachedInfo().Config
			if p == wire.PriorityNormal {
				ackWait = max(ackWait, cur.AckWait)
			}
			if cur.FilterSubject == cfg.FilterSubject && cur.AckWait >= cfg.AckWait &&
				cur.MaxWaiting == cfg.MaxWaiting && cur.MaxAckPending == cfg.MaxAckPending {
				continue
			}
			cfg.AckWait = max(cfg.AckWait, cur.AckWait)
		case p != wire.PriorityNormal && !all:
			if held == nil {
				if held, err = heldPriorities(ctx, js, sp, typ); err != nil {
					return fmt.Errorf("the %s jobs queued: %w", typ, err)
				}
			}
			if held[cfg.FilterSubject] == 0 {
				continue // made when its jobs come
			}
		}
		if _, err := js.CreateOrUpdateConsumer(ctx, sp.JobStream(), cfg); err != nil {
			return fmt.Errorf("the consumer of %s %s jobs: %w", p, typ, err)
		}
	}
	return nil
}

// MakePriority makes the consumer of typ's jobs of priority p (high or
// low), as its normal consumer is, once jobs of that priority have come.
// It makes none while typ has no normal consumer (no host serves it:
// MakeConsumers makes both when one does) and reports whether the
// consumer exists now.
func MakePriority(ctx context.Context, js jetstream.JetStream, sp subject.Space, typ string, p wire.Priority) (bool, error) {
	defer lockType(sp, typ)()
	normal, err := js.Consumer(ctx, sp.JobStream(), sp.Consumer(typ))
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	cfg := consumerConfig(sp, typ, p, normal.CachedInfo().Config.AckWait)
	if _, err := js.Consumer(ctx, sp.JobStream(), cfg.Durable); err == nil {
		return true, nil
	}
	if _, err := js.CreateConsumer(ctx, sp.JobStream(), cfg); err != nil && !errors.Is(err, jetstream.ErrConsumerExists) {
		return false, fmt.Errorf("the consumer of %s %s jobs: %w", p, typ, err)
	}
	// A host may have raised the type's ack wait in between (MakeConsumers
	// raises those that exist): this one must not lease for less.
	if normal, err = js.Consumer(ctx, sp.JobStream(), sp.Consumer(typ)); err == nil {
		if wait := normal.CachedInfo().Config.AckWait; wait > cfg.AckWait {
			cfg.AckWait = wait
			if _, err := js.UpdateConsumer(ctx, sp.JobStream(), cfg); err != nil {
				return false, fmt.Errorf("the consumer of %s %s jobs: %w", p, typ, err)
			}
		}
	}
	return true, nil
}

// consumerConfig is the consumer of typ's jobs of priority p.
func consumerConfig(sp subject.Space, typ string, p wire.Priority, ackWait time.Duration) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       sp.ConsumerAt(typ, string(p)),
		FilterSubject: sp.JobAt(typ, string(p)),
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       ackWait,
		MaxDeliver:    -1,
		MaxWaiting:    4096,
		MaxAckPending: 100_000,
	}
}

// heldPriorities returns the number of typ's high and low jobs the job
// stream holds, by subject (absent: none).
func heldPriorities(ctx context.Context, js jetstream.JetStream, sp subject.Space, typ string) (map[string]uint64, error) {
	stream, err := js.Stream(ctx, sp.JobStream())
	if err != nil {
		return nil, err
	}
	info, err := stream.Info(ctx, jetstream.WithSubjectFilter(sp.Job(typ)+".*"))
	if err != nil {
		return nil, err
	}
	if info.State.Subjects == nil {
		return map[string]uint64{}, nil
	}
	return info.State.Subjects, nil
}
