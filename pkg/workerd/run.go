package workerd

import (
	"context"
	"fmt"
	"os"
	"sync"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/conductor-run/conductor/internal/agent"
	"github.com/conductor-run/conductor/internal/tlsconf"
	"github.com/conductor-run/conductor/pkg/broker"
)

// Run connects to the conductor, runs the pools of cfg until ctx is done,
// then stops them gracefully and returns nil. While it runs, each value of
// cfg.Reload re-reads cfg.ConfigFile; once ctx is done, cfg.Kill turns the
// graceful stop into an immediate one.
//
// The stop follows broker.Pool.Stop for every pool at once: no new job is
// taken, jobs in flight get each pool's stop_timeout to finish, workers are
// asked to exit, then get SIGTERM and SIGKILL; then the job states are
// written, the host is announced as leaving, and the connection is closed.
//
// Run returns an error, without having started a pool, when the pools do
// not load or are invalid (ErrNoPools when there are none) or larger than
// cfg.MaxPoolSize, when cfg.TokenFile cannot be read, when
// cfg.HostID or cfg.Namespace is not a valid subject token, or when NATS
// rejects cfg.NATSURL. A conductor that cannot be reached is not an error:
// Run keeps reconnecting, and each pool waits for the conductor's job
// stream.
func Run(ctx context.Context, cfg Config) error {
	cfg = cfg.withDefaults()
	if cfg.JobLease < MinJobLease || cfg.JobLease > MaxJobLease {
		return fmt.Errorf("workerd: bad job lease %s (--job-lease): want %s to %s", cfg.JobLease, MinJobLease, MaxJobLease)
	}
	pools, err := cfg.loadPools()
	if err != nil {
		return err
	}
	if len(pools) == 0 {
		return ErrNoPools
	}
	log := cfg.Logger
	token, err := cfg.token()
	if err != nil {
		return err
	}
	if _, err := broker.SetCgroups(cfg.Cgroups, log); err != nil {
		return err
	}
	tlsConfig, err := tlsconf.Client(tlsconf.Files{CA: cfg.TLSCA, Cert: cfg.TLSCert, Key: cfg.TLSKey})
	if err != nil {
		return err
	}
	var extra []nats.Option
	if cfg.NATSCreds != "" {
		if err := checkCreds(cfg.NATSCreds); err != nil {
			return fmt.Errorf("workerd: --nats-creds %s: %w", cfg.NATSCreds, err)
		}
		extra = append(extra, nats.UserCredentials(cfg.NATSCreds))
	}
	nc, quiet, err := connect(cfg.NATSURL, token, cfg.HostID, tlsConfig, log, extra...)
	if err != nil {
		return err
	}
	defer quiet() // after Close: a callback it leaves running logs nothing
	defer nc.Close()
	a, err := agent.New(agent.Config{
		Conn: nc, Namespace: cfg.Namespace, Host: cfg.HostID, Pools: pools, Logger: log,
		MaxPoolSize: cfg.MaxPoolSize, AckWait: cfg.JobLease,
	})
	if err != nil {
		return err
	}
	// Under the startstop contract ctx bounds the agent's run: its end
	// begins the graceful stop, which Stop below waits for and Kill may
	// cut short. Run stops the agent itself too, so that it does not rely
	// on that: the stop is the same, and Stop is idempotent.
	if err := a.Start(ctx); err != nil {
		return err
	}
	for ctx.Err() == nil {
		select {
		case <-ctx.Done():
		case <-cfg.Reload:
			reload(ctx, a, cfg)
		}
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() {
		select {
		case <-cfg.Kill:
			a.Kill()
		case <-a.Stopped():
		}
	})
	a.Stop()
	return nil
}

// reload re-reads the config file and applies the difference. A config
// that does not load changes nothing. Its log lines name SIGHUP, workerd's
// trigger of cfg.Reload.
func reload(ctx context.Context, a *agent.Agent, cfg Config) {
	log := cfg.Logger
	if cfg.ConfigFile == "" {
		log.Warn("SIGHUP: no --config file to reload")
		return
	}
	pools, err := cfg.loadPools()
	if err != nil {
		log.Error("SIGHUP: config not reloaded; pools unchanged", "err", err)
		return
	}
	log.Info("SIGHUP: reloading the config", "file", cfg.ConfigFile, "pools", len(pools))
	if err := a.Reload(ctx, pools); err != nil {
		log.Error("SIGHUP: reload incomplete", "err", err)
		return
	}
	log.Info("SIGHUP: config reloaded")
}

// checkCreds checks that path is a NATS credentials file: a user JWT and
// a user seed, each decorated. A file that is not fails the start at once,
// not at every reconnect.
func checkCreds(path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if _, err := nkeys.ParseDecoratedJWT(data); err != nil {
		return fmt.Errorf("no user JWT in it: %w", err)
	}
	if _, err := nkeys.ParseDecoratedUserNKey(data); err != nil {
		return fmt.Errorf("no user seed in it: %w", err)
	}
	return nil
}
