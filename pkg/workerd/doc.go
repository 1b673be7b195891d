// Package workerd is the per-host supervisor that the workerd command runs,
// as a library: it connects to the conductor's NATS, runs pools of worker
// processes (pkg/broker), feeds each pool the jobs of its type, writes
// their states, and announces the host's workers in a heartbeat.
//
// # Running
//
// Run takes a Config and blocks until its context is done, then stops the
// pools gracefully:
//
//	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
//	defer stop()
//	err := workerd.Run(ctx, workerd.Config{
//		NATSURL: "nats://conductor:4222",
//		Pools:   []broker.Spec{{Name: "squares", Count: 4, Cmd: []string{"./squares-worker"}}},
//		Logger:  slog.Default(),
//	})
//
// Pools come from Config.Pools (workerd's --pool flags) and from
// Config.ConfigFile (its --config file, read with broker.LoadConfig), the
// file's first. The conductor need not be up: Run reconnects for ever, and
// a pool starts taking jobs once the conductor has made the job stream.
//
// # Reloading and stopping
//
// Run owns no signals; its caller turns them into channels. A value on
// Config.Reload re-reads the config file and applies the difference: new
// pools start, removed ones stop, changed ones are resized or rolled over
// one worker at a time. A file that does not load changes nothing.
//
// Cancelling Run's context is the soft stop: no new job is taken, and jobs
// in flight get each pool's stop_timeout to finish before their workers
// get SIGTERM, then SIGKILL. A value (or a close) on Config.Kill during
// that stop is the hard stop: every worker is killed at once and its job is
// redelivered to another worker. The workerd command sends Reload on
// SIGHUP, cancels on SIGINT or SIGTERM, and closes Kill on a second one.
//
// # What the conductor can make a host do
//
// A pool command comes from whoever may send one; the host checks it
// against its own Config. An upgrade may name only a pool's cmd or one of
// its broker.Spec.Upgrades, a resize at most Config.MaxPoolSize workers;
// anything else is refused in the command's answer and the log. Workers do
// not inherit the host's CONDUCTOR_TOKEN; Config.TokenFile keeps the token
// off the command line. See docs/security.md.
//
// See docs/architecture.md for how a job travels, and docs/supervision.md
// for the pools' keys and restart policy.
package workerd
