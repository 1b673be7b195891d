// Package broker supervises pools of worker processes on one host. workerd
// runs one Pool per --pool flag; the in-process batch runner of
// pkg/conductor runs its own.
//
// # A tour
//
// A Spec says what to run: a name (the job type), a count, a command line,
// a protocol and timeouts. It comes from a --pool flag through ParseSpec
// ("name=squares,count=2,cmd=./bin/squares-worker") or from YAML.
//
// NewPool takes the Spec and a Source, the queue side: the pool calls
// Source.Next once per idle worker and Source.Done exactly once for every
// job Next returned, whatever happens to the worker. Start starts Count
// worker slots and returns; Workers and Info describe them at any time;
// Stop, Kill and Stopped end them (the lifecycle every long-running part of
// conductor shares).
//
// # Worker slots
//
// Each slot is one goroutine that owns one process at a time and loops
// start -> wait -> decide -> delay:
//
//   - start: the process is forked in its own process group with
//     Pdeathsig, stdout and stderr piped into the Logger line by line (at
//     most 64 KiB per line), and, for ProtocolChannel, fd 3 (to the worker)
//     and fd 4 (from the worker) carrying the JSON lines of internal/proto.
//     Its environment is workerd's, then Spec.Env, then CONDUCTOR_PROTOCOL,
//     CONDUCTOR_POOL, CONDUCTOR_WORKER_INDEX and CONDUCTOR_HOST.
//   - wait: a channel worker must say ready within ReadyTimeout; then the
//     slot loops Source.Next -> {"op":"job"} -> {"op":"done"} ->
//     Source.Done. {"op":"busy"} pauses Next until the next ready. Bad lines
//     and unknown ops are logged and skipped. A ProtocolNone process is
//     ready once started and only watched.
//   - decide: a process that ended on its own is replaced according to the
//     restart policy: at once the first time, then with exponential backoff
//     (100ms doubling to 10s, ±10% jitter), reset after 10s of stable run,
//     optionally bounded by Spec.RestartsPerMinute.
//   - delay: a timer against the pool's stop; no polling.
//
// # No job is lost
//
// A worker that exits (or is killed) holding a job has that job reported
// at once with Outcome.Crashed and the exit ("exit status 3; stderr: ...",
// "signal: killed"), so the Source can redeliver it without waiting for an
// ack timeout. A job that never reached its worker (the write to fd 3
// failed) stays with the slot and goes to the replacement process; if the
// pool stops first it is reported Crashed, "pool stopped before the job
// started".
//
// # Stopping
//
// Stop is graceful and proceeds in this order: intake stops (the context
// of every pending Source.Next ends); in-flight jobs get StopTimeout to
// finish and are reported normally; each worker gets {"op":"shutdown"} and
// EOF on fd 3, and KillTimeout to exit; then SIGTERM to its process group,
// KillTimeout more, then SIGKILL of the group. A job still running when its
// worker is killed is reported Crashed ("pool stopped ..."). Kill sends
// SIGKILL to every group at once. Both return once every process is reaped,
// and every process group is SIGKILLed after its leader exits, so nothing
// the workers started outlives the pool.
//
// # Processes and threads
//
// Pdeathsig (the child gets SIGKILL if workerd dies) fires when the thread
// that forked the child exits, not the process (golang/go#27505). All forks
// therefore happen on one goroutine locked to its OS thread, alive while
// any pool runs; see spawner.
//
// The package is for Linux; other Unix systems build without Pdeathsig and
// with RSS reported as 0.
package broker
