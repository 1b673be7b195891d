package conductor

import (
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestJobBudget_Limits(t *testing.T) {
	t.Parallel()
	const (
		mib    = 1 << 20
		perJob = 4 << 10
		maxMsg = 1<<20 + 4<<10
	)
	budget := func(free, msgs, bytes int64) jobBudget {
		return jobBudget{free: free, reserve: 16 * mib, msgs: msgs, bytes: bytes, perJob: perJob, maxMsg: maxMsg, step: 4 * mib}
	}
	for _, tc := range []struct {
		name    string
		b       jobBudget
		cur     jobLimits
		want    jobLimits
		set     bool
		refuses bool
	}{{
		name: "NoLimitsYet", b: budget(32*mib, 0, 0), cur: jobLimits{-1, -1},
		// 16 MiB of room, for jobs of 512 bytes (assumed) and a drain each.
		want: jobLimits{3640, 3640 * 512}, set: true,
	}, {
		name: "SmallJobsQueued", b: budget(32*mib, 1000, 200_000), cur: jobLimits{-1, -1},
		// 16 MiB less 1000 drains: 2951 jobs of 200 bytes and a drain
		// each, but the bytes leave room for a job of the largest size
		// (1 MiB), and 2839 drains.
		want: jobLimits{1000 + 2839, 200_000 + maxMsg}, set: true,
	}, {
		name: "LargeJobsQueued", b: budget(64*mib, 100, 100*64<<10), cur: jobLimits{-1, -1},
		want: jobLimits{100 + (48*mib-100*perJob)/(64<<10+perJob), 100*64<<10 + (48*mib-100*perJob)/(64<<10+perJob)*64<<10}, set: true,
	}, {
		name: "FillingWithinStep", b: budget(30*mib, 1000, 200_000), cur: jobLimits{3000, 600_000},
		// Lets in 2000 jobs, 8.4 MiB with their drains, of 9.9 MiB of room.
		want: jobLimits{3000, 600_000},
	}, {
		name: "LargerJobsCameWiden", b: budget(30*mib, 20, 20*64<<10), cur: jobLimits{3640, 3640 * 512},
		// Split for jobs of 512 bytes, its bytes hold 8 more jobs of 64
		// KiB; the budget holds 209.
		want: jobLimits{20 + 209, 20*64<<10 + 209*64<<10}, set: true,
	}, {
		name: "SmallerJobsKeepTheirSplit", b: budget(30*mib, 2000, 400_000), cur: jobLimits{3000, 3000 * 512},
		// Split for jobs of 512 bytes, it lets in 1000 of 200: within step.
		want: jobLimits{3000, 3000 * 512},
	}, {
		name: "AtTheLimit", b: budget(22*mib, 1500, 300_000), cur: jobLimits{1500, 400_000},
		want: jobLimits{1500, 400_000}, refuses: true,
	}, {
		name: "BytesAtTheLimit", b: budget(22*mib, 1400, 300_000), cur: jobLimits{1500, 300_100},
		want: jobLimits{1500, 300_100}, refuses: true,
	}, {
		name: "EstimateRoseTighten", b: jobBudget{free: 30 * mib, reserve: 16 * mib, msgs: 1000, bytes: 200_000, perJob: 12 << 10, maxMsg: maxMsg, step: 4 * mib},
		cur: jobLimits{3000, 600_000},
		// Room 2.3 MiB, while the limits let in 2000 jobs of 12 KiB drains:
		// a quarter of it for bytes, 146 drains.
		want: jobLimits{1000 + 146, 200_000 + 598_016}, set: true,
	}, {
		name: "DrainedLoosen", b: budget(28*mib, 0, 0), cur: jobLimits{1, 1},
		want: jobLimits{2730, 2730 * 512}, set: true,
	}, {
		name: "ClosedLittleRoom", b: budget(19*mib, 0, 0), cur: jobLimits{1, 1},
		want: jobLimits{1, 1}, refuses: true,
	}, {
		name: "BelowTheReserveClosesAtOnce", b: budget(15*mib, 1000, 200_000), cur: jobLimits{1200, 240_000},
		want: jobLimits{1000, 200_000}, set: true, refuses: true,
	}, {
		name: "BelowTheReserveEmpty", b: budget(15*mib, 0, 0), cur: jobLimits{100, 100_000},
		want: jobLimits{1, 1}, set: true, refuses: true,
	}, {
		name: "BelowTheReserveClosed", b: budget(15*mib, 1000, 200_000), cur: jobLimits{1000, 200_000},
		want: jobLimits{1000, 200_000}, refuses: true,
	}, {
		name: "QueuedDrainShortOfRoom", b: budget(20*mib, 2000, 400_000), cur: jobLimits{2000, 400_000},
		// The drain of 2000 jobs needs 8 MiB, 4 MiB of it is free: closed.
		want: jobLimits{2000, 400_000}, refuses: true,
	}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, set := tc.b.limits(tc.cur)
			require.Equal(t, tc.want, got)
			require.Equal(t, tc.set, set)
			require.Equal(t, tc.refuses, tc.b.refuses(got))
		})
	}
}

// TestJobBudget_TargetFitsTheRoom checks the budget's promise: whatever
// the jobs' sizes, what the target limits let in writes no more than the
// room, and a job of the mean size is let in while the room holds one.
func TestJobBudget_TargetFitsTheRoom(t *testing.T) {
	t.Parallel()
	r := rand.New(rand.NewPCG(1, 2))
	for range 10_000 {
		b := jobBudget{
			free: r.Int64N(1 << 36), reserve: r.Int64N(1 << 30), msgs: r.Int64N(1 << 20),
			perJob: 1 + r.Int64N(1<<16), maxMsg: 1 + r.Int64N(8<<20), step: 1 + r.Int64N(1<<28),
		}
		b.bytes = b.msgs * (1 + r.Int64N(1<<16))
		lim := b.target()
		room := b.room()
		if room <= 0 {
			require.LessOrEqual(t, lim.msgs, max(b.msgs, 1), "%+v", b)
			require.LessOrEqual(t, lim.bytes, max(b.bytes, 1), "%+v", b)
			continue
		}
		require.LessOrEqual(t, b.cost(lim), room, "%+v: %+v", b, lim)
		if room >= 2*(b.meanJob()+b.perJob)+min(b.maxMsg, room/4) {
			require.False(t, b.refuses(lim), "%+v: %+v refuses with room %d", b, lim, room)
		}
		// Set again, they stay: no update storm.
		if _, set := b.limits(lim); set {
			t.Fatalf("%+v: the target %+v is set again", b, lim)
		}
	}
}

func TestJobCost_Observe(t *testing.T) {
	t.Parallel()
	c := newJobCost()
	require.EqualValues(t, 3*priorStateBytes+costOverhead, c.perJob(), "the prior")
	c.observe(0, 0)
	require.EqualValues(t, 3*priorStateBytes+costOverhead, c.perJob(), "nothing seen")

	// States of 400 bytes: the estimate falls within a few fallWindows.
	for range 5 {
		c.observe(fallWindow, fallWindow*400)
	}
	require.InDelta(t, 3*400+costOverhead, c.perJob(), 30)

	// States of 10 KiB: it rises within a few riseWindows.
	for range 5 {
		c.observe(riseWindow, riseWindow*10<<10)
	}
	require.InDelta(t, 3*10<<10+costOverhead, c.perJob(), 3*10<<10/100)

	// Empty states count as the least a state is.
	for range 50 {
		c.observe(fallWindow, 0)
	}
	require.EqualValues(t, 3*minStateBytes+costOverhead, c.perJob())
}
