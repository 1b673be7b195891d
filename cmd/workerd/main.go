// Command workerd is the per-host supervisor: it runs pools of worker
// processes, feeds them the jobs of their type from the conductor, and
// reports them. See docs/architecture.md and docs/protocol.md.
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
	"time"

	"github.com/nats-io/nats.go"

	"github.com/conductor-run/conductor/internal/agent"
	_ "github.com/conductor-run/conductor/internal/profiling" // pprof in -tags pprof builds
	"github.com/conductor-run/conductor/internal/subject"
	"github.com/conductor-run/conductor/pkg/broker"
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
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "workerd:", err)
		os.Exit(1)
	}
}

// pools is the repeatable --pool flag.
type pools []broker.Spec

func (p *pools) String() string { return fmt.Sprint(len(*p), " pools") }

func (p *pools) Set(s string) error {
	spec, err := broker.ParseSpec(s)
	if err != nil {
		return err
	}
	*p = append(*p, spec)
	return nil
}

func run(ctx context.Context, args []string, stderr io.Writer) error {
	hostname, _ := os.Hostname()
	fs := flag.NewFlagSet("workerd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	url := fs.String("conductor", "nats://127.0.0.1:4222", "the conductor's NATS URL")
	token := fs.String("token", os.Getenv("CONDUCTOR_TOKEN"), "the conductor's token (env CONDUCTOR_TOKEN)")
	cfg := agent.Config{}
	fs.StringVar(&cfg.Host, "host-id", subject.Sanitize(hostname), "this host's id")
	fs.StringVar(&cfg.Namespace, "namespace", "default", "the conductor's namespace")
	var specs pools
	fs.Var(&specs, "pool", "a pool: 'name=TYPE,count=N,cmd=COMMAND LINE' (repeatable; cmd= last)")
	config := fs.String("config", "", "a YAML file of pools (the keys of --pool, under \"pools:\")")
	level := fs.String("log-level", "info", "log level: debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	flagSpecs := specs
	specs, err := loadSpecs(*config, flagSpecs)
	if err != nil {
		return err
	}
	if len(specs) == 0 {
		return errors.New("no pools: give --config FILE or at least one --pool 'name=TYPE,count=N,cmd=COMMAND'")
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(*level)); err != nil {
		return fmt.Errorf("bad --log-level: %w", err)
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lvl}))
	cfg.Pools, cfg.Logger = specs, log

	nc, err := connect(*url, *token, cfg.Host, log)
	if err != nil {
		return err
	}
	defer nc.Close()
	cfg.Conn = nc
	a, err := agent.New(cfg)
	if err != nil {
		return err
	}
	if err := a.Start(ctx); err != nil {
		return err
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for ctx.Err() == nil {
		select {
		case <-ctx.Done():
		case <-hup:
			reload(ctx, a, *config, flagSpecs, log)
		}
	}
	log.Info("workerd stopping: finishing in-flight jobs (signal again to stop now)")
	again := make(chan os.Signal, 1)
	signal.Notify(again, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(again)
	go func() {
		select {
		case <-again:
			log.Warn("second signal: killing workers now")
			a.Kill()
		case <-a.Stopped():
		}
	}()
	a.Stop()
	return nil
}

// loadSpecs returns the pools of the config file, if any, then those of the
// --pool flags.
func loadSpecs(config string, flagSpecs []broker.Spec) ([]broker.Spec, error) {
	if config == "" {
		return flagSpecs, nil
	}
	fromFile, err := broker.LoadConfig(config)
	if err != nil {
		return nil, err
	}
	return append(fromFile, flagSpecs...), nil
}

// reload re-reads the config file and applies the difference (SIGHUP). A
// config that does not load changes nothing.
func reload(ctx context.Context, a *agent.Agent, config string, flagSpecs []broker.Spec, log *slog.Logger) {
	if config == "" {
		log.Warn("SIGHUP: no --config file to reload")
		return
	}
	specs, err := loadSpecs(config, flagSpecs)
	if err != nil {
		log.Error("SIGHUP: config not reloaded; pools unchanged", "err", err)
		return
	}
	log.Info("SIGHUP: reloading the config", "file", config, "pools", len(specs))
	if err := a.Reload(ctx, specs); err != nil {
		log.Error("SIGHUP: reload incomplete", "err", err)
		return
	}
	log.Info("SIGHUP: config reloaded")
}

// connect dials the conductor's NATS, retrying forever in the background:
// workerd starts before, and outlives restarts of, conductord.
func connect(url, token, host string, log *slog.Logger) (*nats.Conn, error) {
	opts := []nats.Option{
		nats.Name("workerd " + host),
		nats.MaxReconnects(-1),
		nats.RetryOnFailedConnect(true),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.ReconnectJitter(250*time.Millisecond, time.Second),
		nats.CustomReconnectDelay(func(attempts int) time.Duration {
			return min(250*time.Millisecond<<min(attempts, 5), 5*time.Second)
		}),
		nats.DisconnectErrHandler(func(nc *nats.Conn, err error) {
			if !nc.IsClosed() {
				log.Warn("disconnected from the conductor; reconnecting", "err", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("connected to the conductor", "url", nc.ConnectedUrlRedacted())
		}),
	}
	if token != "" {
		opts = append(opts, nats.Token(token))
	}
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", url, err)
	}
	return nc, nil
}
