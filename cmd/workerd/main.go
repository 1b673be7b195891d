// Command workerd is the per-host supervisor: it runs pools of worker
// processes, feeds them the jobs of their type from the conductor, and
// reports them. It runs pkg/workerd; see docs/architecture.md and
// docs/protocol.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"github.com/conductor-run/conductor/internal/cmdline"
	"github.com/conductor-run/conductor/internal/logflags"
	"github.com/conductor-run/conductor/internal/names"
	_ "github.com/conductor-run/conductor/internal/profiling" // pprof in -tags pprof builds
	"github.com/conductor-run/conductor/internal/version"
	"github.com/conductor-run/conductor/pkg/broker"
	"github.com/conductor-run/conductor/pkg/workerd"
)

// gcPercent is workerd's GOGC unless the environment sets one. workerd's
// live heap is small (a few MiB), and a busy pool of short jobs makes a few
// KiB of garbage per job: at the default of 100 the collector ran a dozen
// times a second and, with the scavenger returning the freed pages to the
// system each time, cost about a fifth of workerd's CPU in the no-op
// benchmark. At 200 the heap may grow to three times the live data between
// collections; docs/architecture.md, "Decisions".
const gcPercent = 200

func main() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(gcPercent) // not in the environment: workers keep Go's default
	}
	if err := undumpable(); err != nil {
		fmt.Fprintln(os.Stderr, "workerd: warning: cannot hide its environment from its workers (prctl PR_SET_DUMPABLE):", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	code := cmdline.ExitCode("workerd", run(ctx, os.Args[1:], os.Stdout, os.Stderr), os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("workerd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg workerd.Config
	fs.StringVar(&cfg.NATSURL, "conductor", workerd.DefaultNATSURL, "the conductor's NATS URL")
	fs.StringVar(&cfg.Token, "token", os.Getenv(names.EnvToken), "the conductor's token (env CONDUCTOR_TOKEN); on the command line it shows in the process list: prefer --token-file")
	fs.StringVar(&cfg.TokenFile, "token-file", "", "a file holding the conductor's token, read once at start (chmod 600); instead of --token and CONDUCTOR_TOKEN")
	fs.StringVar(&cfg.TLSCA, "tls-ca", "", "PEM file of the issuer of the conductor's NATS certificate (default: the system's roots)")
	fs.StringVar(&cfg.TLSCert, "tls-cert", "", "PEM file of this host's client certificate, for a conductor that requires one (with --tls-key)")
	fs.StringVar(&cfg.TLSKey, "tls-key", "", "PEM file of the key of --tls-cert")
	fs.DurationVar(&cfg.JobLease, "job-lease", workerd.DefaultJobLease, "how long a job this host took stays its own without word from it: a lost host's jobs go to others this long after its last word (workerd extends the lease of the jobs it runs), 1s to 1h")
	fs.StringVar(&cfg.NATSCreds, "nats-creds", "", "a NATS credentials file (user JWT and seed) to authenticate with, for NATS servers of your own in operator mode (docs/deployment.md)")
	fs.IntVar(&cfg.MaxPoolSize, "max-pool-size", workerd.DefaultMaxPoolSize, "the most workers one pool may have on this host: a --pool, config or resize above it is refused")
	fs.StringVar(&cfg.HostID, "host-id", workerd.DefaultHostID(), "this host's id")
	fs.StringVar(&cfg.Namespace, "namespace", "default", "the conductor's namespace")
	fs.Func("pool", "a pool: 'name=TYPE,count=N,cmd=COMMAND LINE' (repeatable; cmd= last)", func(s string) error {
		spec, err := broker.ParseSpec(s)
		if err == nil {
			cfg.Pools = append(cfg.Pools, spec)
		}
		return err
	})
	fs.StringVar(&cfg.ConfigFile, "config", "", "a YAML file of pools (the keys of --pool, under \"pools:\")")
	cfg.Cgroups = broker.CgroupsAuto
	fs.Func("cgroups", "contain each pool in a cgroup: auto (where the host allows it, else process groups only, said once in the log) or off (default auto)", func(s string) (err error) {
		cfg.Cgroups, err = broker.ParseCgroups(s)
		return err
	})
	logs := logflags.Register(fs)
	showVersion := fs.Bool("version", false, "print workerd's version and exit")
	if err := fs.Parse(args); err != nil {
		return cmdline.UsageError{Err: err}
	}
	if *showVersion {
		_, err := fmt.Fprintln(stdout, "workerd", version.Get())
		return err
	}
	if fs.NArg() > 0 {
		return cmdline.Usage(fs, fmt.Errorf("unexpected argument %q", fs.Arg(0)))
	}
	log, err := logs.Logger(stderr)
	if err != nil {
		return cmdline.Usage(fs, err)
	}
	if flagGiven(fs, "token") {
		log.Warn("--token on the command line is visible to every local user in the process list; use --token-file or " + names.EnvToken)
	} else if cfg.TokenFile != "" {
		cfg.Token = "" // the file is preferred to the environment
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	reload, kill, done := make(chan struct{}, 1), make(chan struct{}), make(chan struct{})
	cfg.Logger, cfg.Reload, cfg.Kill = log, reload, kill
	go relaySignals(ctx, log, hup, reload, kill, done)
	err = workerd.Run(ctx, cfg)
	close(done)
	if errors.Is(err, workerd.ErrNoPools) {
		return fmt.Errorf("%w: give --config FILE or at least one --pool 'name=TYPE,count=N,cmd=COMMAND'", err)
	}
	return err
}

// flagGiven reports whether the command line set the flag name.
func flagGiven(fs *flag.FlagSet, name string) bool {
	given := false
	fs.Visit(func(f *flag.Flag) { given = given || f.Name == name })
	return given
}

// relaySignals sends on reload for each SIGHUP until ctx is done (the
// first SIGINT or SIGTERM), then closes kill on a second one. It returns
// once done is closed.
func relaySignals(ctx context.Context, log *slog.Logger, hup <-chan os.Signal, reload, kill chan<- struct{}, done <-chan struct{}) {
	for {
		select {
		case <-done:
			return
		case <-hup:
			select {
			case reload <- struct{}{}:
			default: // a reload is pending already
			}
		case <-ctx.Done():
			log.Info("workerd stopping: finishing in-flight jobs (signal again to stop now)")
			again := make(chan os.Signal, 1)
			signal.Notify(again, os.Interrupt, syscall.SIGTERM)
			defer signal.Stop(again)
			select {
			case <-again:
				log.Warn("second signal: killing workers now")
				close(kill)
			case <-done:
			}
			return
		}
	}
}
