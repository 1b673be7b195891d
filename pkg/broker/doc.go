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
// worker slots and returns; Workers (a Worker per slot, with its
// WorkerState) and Info (a PoolInfo, with the PoolState) describe them at
// any time; Stop, Kill and Stopped end them. That is the lifecycle every
// long-running part of conductor shares (internal/startstop): Start(ctx)
// returns once started and ctx bounds the pool's life, Stop blocks and is
// idempotent. A Pool lives once: it is not started again after a Stop.
//
// The package speaks only its own types and links nothing of NATS: any Go
// program can run pools. workerd (internal/agent) turns its Events,
// LogLines, Workers and PoolInfos into the records it publishes, under the
// same JSON names.
//
// # Worker slots
//
// Each slot is one goroutine that owns one process at a time and loops
// start -> wait -> decide -> delay:
//
//   - start: the process is forked in its own process group with
//     Pdeathsig, born in a cgroup of its own where the pool has one (see
//     Containment below), stdout and stderr read line by line (at most 64 KiB per
//     line) into Config.OnOutput if set, else into the Logger, and, for ProtocolChannel, fd 3 (to the worker)
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
//     (RestartDelay, 100ms, times RestartFactor, 2, up to RestartMaxDelay,
//     10s; ±10% jitter), reset after RestartReset (10s) of stable run or a
//     finished job. Spec.MaxFailedStarts (5, on by default) within
//     Spec.FailedStartWindow (10s) is the pool's crash-loop breaker: past
//     it the pool is marked failed (a "failed" event) and no worker
//     restarts until the window allows one; Spec.MaxRestartsPerMinute is
//     a coarser throttle, off by default. PoolInfo.Reason and
//     Worker.Reason say why a pool or slot is not plainly up.
//   - delay: a timer against the slot's stop; no polling.
//
// # The supervisor
//
// One more goroutine per pool owns the set of slots. It runs the commands
// one at a time: Drain and Resume, Restart, Resize, Recycle and Upgrade.
// A recycle or an upgrade is rolling: for each worker a new slot starts at
// the same index, and only once its process is ready (for an upgrade's
// first worker, ready and then up for a health period) is the old slot
// retired, gracefully; so a pool never has fewer than Count-1 ready
// workers, a shared Listen socket never refuses a connection, and no job is
// lost. A new worker that fails leaves the old one in place; an upgrade
// then rolls back. The supervisor also recycles, one at a time, a worker
// that finished Spec.MaxJobs jobs (it takes no more meanwhile), one older
// than Spec.Recycle (±10%), and, where the pool has no memory cgroup, one
// whose RSS is over Spec.MaxRSS (checked every second).
//
// Every start, first ready, exit (with its Reason, exit code and signal),
// custom message ({"op":"message"}) and pool change is reported to
// Config.OnEvent as an Event, its EventKind one of the Event* constants;
// every output line to Config.OnOutput as a LogLine.
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
// On Linux, a process ended by a SIGKILL the pool did not send is taken to
// be the kernel's OOM killer's victim if a count of OOM kills rose while it
// ran: its memory cgroup's own, or without one the host's (/proc/vmstat):
// Outcome.OOMKilled, the exit event's OOM, and "signal: killed (out of
// memory: the kernel's OOM killer)", or "(out of memory: max_rss reached;
// the kernel's OOM killer)" where Spec.MaxRSS is its cgroup's limit.
// Without a cgroup, another process's OOM kill together with a kill -9
// passes for one too.
//
// # Containment
//
// Where the host allows it (Linux, cgroup v2 with delegation or cgroup v1,
// a writable hierarchy), each pool has a cgroup, which holds Spec.CPU and
// Spec.Pids, and each process a leaf of it, which holds Spec.MaxRSS as a
// hard memory limit and the process's descendants: every SIGKILL of a
// worker, and its end however it came, kills the whole leaf, whatever
// session or process group its processes made. Elsewhere, or after
// SetCgroups(CgroupsOff, ...), pools are contained by process groups only.
// SetCgroups makes the choice for the process and logs it once; a pool
// started without one chooses CgroupsAuto. See docs/supervision.md,
// "Containment".
//
// # Stopping
//
// Stop is graceful and proceeds in this order: intake stops (the context
// of every pending Source.Next ends); in-flight jobs get StopTimeout to
// finish and are reported normally; each worker gets {"op":"shutdown"} and
// EOF on fd 3, and KillTimeout to exit; then SIGTERM to its process group,
// KillTimeout more, then SIGKILL of the cgroup (or, without one, of the
// group). A job still running when its worker is killed is reported
// Crashed ("pool stopped ..."). Kill sends SIGKILL to every cgroup or
// group at once. Both return once every process is reaped, and every
// cgroup (or process group) is SIGKILLed after its leader exits, so nothing
// the workers started outlives the pool (with process groups only, a
// descendant that left its group does).
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
