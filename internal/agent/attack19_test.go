package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/names"
	"github.com/conductor-run/conductor/internal/wire"
	"github.com/conductor-run/conductor/pkg/broker"
)

// Review 19: a payload that is not JSON reaches every path that puts a
// payload into a state (the state encoder panics on one that is not JSON).

// publishRaw queues a job of type sq with payload data, as it is, and
// headers.
func (b *sourceBundle) publishRaw(t *testing.T, id string, data []byte, headers map[string]string) {
	t.Helper()
	m := nats.NewMsg(b.space.Job("sq"))
	m.Header.Set(names.HeaderJobID, id)
	for k, v := range headers {
		m.Header.Set(k, v)
	}
	m.Data = data
	_, err := b.js.PublishMsg(context.Background(), m)
	require.NoError(t, err)
}

// A poison job (its worker crashed at each attempt) whose payload is not
// JSON, nor UTF-8, is quarantined dead with its payload kept as a string.
func TestAttack19_PoisonWithPayloadNotJSON(t *testing.T) {
	t.Parallel()
	src, b := setupSource(t)
	src.setLimits(10, 2)
	b.publishRaw(t, "poison", []byte("{\x01\x02 not json \n"), nil)
	now := time.Now()
	job := next(t, src)
	require.Equal(t, "poison", job.ID)
	src.Done(job, broker.Outcome{Crashed: true, Err: "worker exited: signal: killed", Started: now, Ended: now})
	b.state(t, job, wire.StatusFailed)
	job = next(t, src)
	src.Done(job, broker.Outcome{Crashed: true, Err: "worker exited: signal: killed", Started: now, Ended: now})
	dead := b.state(t, job, wire.StatusDead)
	require.Contains(t, dead.Error, "poison job")
	var kept string
	require.NoError(t, json.Unmarshal(dead.Payload, &kept))
	require.Equal(t, "{\x01\x02 not json \n", kept)
}

// Attempts exhausted (not a permanent error) on a payload that is not
// JSON: dead, the payload kept as a string.
func TestAttack19_AttemptsExhaustedWithPayloadNotJSON(t *testing.T) {
	t.Parallel()
	src, b := setupSource(t)
	b.publishRaw(t, "once", []byte("<xml/>"), map[string]string{names.HeaderMaxAttempts: "1"})
	job := next(t, src)
	now := time.Now()
	src.Done(job, broker.Outcome{Err: "boom", Started: now, Ended: now})
	dead := b.state(t, job, wire.StatusDead)
	require.Equal(t, "boom", dead.Error)
	require.JSONEq(t, `"<xml/>"`, string(dead.Payload))
}

// A payload of control bytes grows six times as a JSON string: past the
// largest state, its dead state is stored without it, with no panic.
func TestAttack19_QuotedPayloadPastTheStateLimit(t *testing.T) {
	t.Parallel()
	src, b := setupSource(t)
	payload := bytes.Repeat([]byte{1}, 300<<10)
	b.publishRaw(t, "ctl", payload, nil)
	job := next(t, src)
	now := time.Now()
	src.Done(job, broker.Outcome{Err: "payload is not valid JSON", Permanent: true, Started: now, Ended: now})
	dead := b.state(t, job, wire.StatusDead)
	require.Contains(t, dead.Error, "is not kept")
	require.Empty(t, dead.Payload)
}

// The sweep races a pool that pulls: its consumers are removed while its
// pull requests wait (the sweep listed them idle a moment before). The
// pool makes them again and takes the jobs queued since, round after
// round, losing none.
func TestAttack19_ConsumersDeletedUnderWaitingPulls(t *testing.T) {
	t.Parallel()
	src, b := setupSource(t)
	ctx := context.Background()
	stream, err := b.js.Stream(ctx, b.space.JobStream())
	require.NoError(t, err)
	for round := range 5 {
		b.makePriorities(t) // polls wait on all three: each is removed under one
		got := make(chan *broker.Job, 1)
		nctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		go func() {
			j, err := src.Next(nctx)
			if err == nil {
				got <- j
			}
			close(got)
		}()
		require.Eventually(t, func() bool {
			c, err := stream.Consumer(ctx, b.space.Consumer("sq"))
			if err != nil {
				return false
			}
			info, err := c.Info(ctx)
			return err == nil && info.NumWaiting > 0
		}, 10*time.Second, 5*time.Millisecond, "round %d: no pull waiting", round)
		for _, p := range wire.Priorities {
			require.NoError(t, stream.DeleteConsumer(ctx, b.space.ConsumerAt("sq", string(p))))
		}
		id := "r" + string(rune('0'+round))
		b.publishRaw(t, id, []byte("1"), nil)
		j, ok := <-got
		cancel()
		require.True(t, ok && j != nil, "round %d: the job queued after the removal never came", round)
		require.Equal(t, id, j.ID)
		now := time.Now()
		src.Done(j, broker.Outcome{Result: []byte("1"), Started: now, Ended: now})
		b.state(t, j, wire.StatusSucceeded)
	}
}
