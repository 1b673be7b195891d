package agent

import (
	"github.com/conductor-run/conductor/internal/wire"
	"github.com/conductor-run/conductor/pkg/broker"
)

// The broker speaks its own types; workerd publishes the records of
// internal/wire. These functions are the one place one becomes the other.
// Each copies every field (convert_test.go checks, field by field, that
// none is forgotten); the JSON names are the same on both sides.

// wireEvent is the event workerd publishes for e.
func wireEvent(e broker.Event) wire.Event {
	return wire.Event{
		Time:    e.Time,
		Kind:    string(e.Kind),
		Host:    e.Host,
		Pool:    e.Pool,
		Index:   e.Index,
		PID:     e.PID,
		Reason:  string(e.Reason),
		Exit:    e.Exit,
		Code:    e.Code,
		Signal:  e.Signal,
		OOM:     e.OOM,
		Uptime:  wire.Duration(e.Uptime),
		Count:   e.Count,
		RetryAt: e.RetryAt,
		Error:   e.Error,
		Data:    e.Data,
	}
}

// wireLogLine is the log line workerd publishes for l; the forwarder sets
// its Dropped.
func wireLogLine(l broker.LogLine) wire.LogLine {
	return wire.LogLine{
		Time:   l.Time,
		Host:   l.Host,
		Pool:   l.Pool,
		Index:  l.Index,
		PID:    l.PID,
		Stream: l.Stream,
		Line:   l.Line,
	}
}

// wirePool is the heartbeat's record of a running pool.
func wirePool(p broker.PoolInfo) wire.PoolInfo {
	return wire.PoolInfo{
		Name:      p.Name,
		Count:     p.Count,
		Protocol:  string(p.Protocol),
		State:     string(p.State),
		Operation: string(p.Operation),
		Cmd:       p.Cmd,
		RetryAt:   p.RetryAt,
		Error:     p.Error,
		Reason:    p.Reason,
	}
}

// wireWorker is the heartbeat's record of a worker.
func wireWorker(w broker.Worker) wire.WorkerInfo {
	return wire.WorkerInfo{
		Host:       w.Host,
		Pool:       w.Pool,
		Index:      w.Index,
		PID:        w.PID,
		State:      string(w.State),
		RSS:        w.RSS,
		JobsDone:   w.JobsDone,
		Restarts:   w.Restarts,
		Job:        w.Job,
		Counters:   w.Counters,
		Queued:     w.Queued,
		Started:    w.Started,
		CPU:        wire.Duration(w.CPU),
		Version:    w.Version,
		LastExit:   w.LastExit,
		LastExitAt: w.LastExitAt,
		Reason:     w.Reason,
	}
}
