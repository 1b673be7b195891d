package workerd

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	creds "github.com/conductor-run/conductor/internal/auth"
)

// authLogInterval is the least time between two "authentication failed"
// errors in workerd's log; refusals in between are counted in the next.
const authLogInterval = 10 * time.Second

// connect dials the conductor's NATS, retrying forever in the background:
// workerd starts before, and outlives restarts of, conductord. A refused
// token does not stop the retries either (conductord may be restarted with
// the right one), but each refusal is logged as an error naming --token and
// CONDUCTOR_TOKEN, at most once per authLogInterval.
//
// The connection's callbacks log through a gate that quiet closes: nats.go
// may still run one after Close returns, and a Run that has returned must
// log nothing more (its logger may be gone: a test's is).
func connect(url, token, host string, tlsConfig *tls.Config, log *slog.Logger, extra ...nats.Option) (nc *nats.Conn, quiet func(), err error) {
	gate := newLogGate(log.Handler())
	log = slog.New(gate)
	auth := &authLog{log: log, every: authLogInterval}
	opts := []nats.Option{
		nats.Name("workerd " + host),
		nats.MaxReconnects(-1),
		nats.RetryOnFailedConnect(true),
		nats.IgnoreAuthErrorAbort(),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.ReconnectJitter(250*time.Millisecond, time.Second),
		nats.CustomReconnectDelay(func(attempts int) time.Duration {
			return min(250*time.Millisecond<<min(attempts, 5), 5*time.Second)
		}),
		nats.DisconnectErrHandler(func(nc *nats.Conn, err error) {
			if !nc.IsClosed() && !auth.refused(err, token) {
				log.Warn("disconnected from the conductor; reconnecting", "err", err)
			}
		}),
		nats.ReconnectErrHandler(func(_ *nats.Conn, err error) {
			if !auth.refused(err, token) {
				auth.failed(err)
			}
		}),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			switch {
			case auth.refused(err, token):
			case errors.Is(err, nats.ErrPermissionViolation):
				auth.refusedAction(err)
			default:
				log.Warn("error from the conductor's NATS", "err", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("connected to the conductor", "url", nc.ConnectedUrlRedacted())
		}),
	}
	if token != "" {
		opts = append(opts, nats.Token(token))
		if p := creds.InboxPrefix(token); p != "" {
			// A credential receives replies on its own inbox only.
			opts = append(opts, nats.CustomInboxPrefix(p))
		}
	}
	if tlsConfig != nil {
		opts = append(opts, nats.Secure(tlsConfig))
	}
	opts = append(opts, extra...)
	nc, err = nats.Connect(url, opts...)
	if err != nil {
		gate.close()
		return nil, nil, fmt.Errorf("connect to %s: %w", url, err)
	}
	return nc, gate.close, nil
}

// logGate passes records to h until closed; close waits for a record
// being passed. Gates derived by WithAttrs and WithGroup close with it.
type logGate struct {
	*gateState
	h slog.Handler
}

type gateState struct {
	mu     sync.Mutex
	closed bool
}

func newLogGate(h slog.Handler) *logGate { return &logGate{gateState: &gateState{}, h: h} }

func (g *gateState) close() {
	g.mu.Lock()
	g.closed = true
	g.mu.Unlock()
}

func (g *logGate) Enabled(ctx context.Context, l slog.Level) bool { return g.h.Enabled(ctx, l) }

func (g *logGate) Handle(ctx context.Context, r slog.Record) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return nil
	}
	return g.h.Handle(ctx, r)
}

func (g *logGate) WithAttrs(as []slog.Attr) slog.Handler {
	return &logGate{gateState: g.gateState, h: g.h.WithAttrs(as)}
}

func (g *logGate) WithGroup(name string) slog.Handler {
	return &logGate{gateState: g.gateState, h: g.h.WithGroup(name)}
}

// authLog logs the conductor's refusals of workerd's token, at most one
// line per interval, each counting the refusals since the last.
type authLog struct {
	log   *slog.Logger
	every time.Duration

	mu       sync.Mutex
	last     time.Time // of the last line; guarded by mu
	refusal  int       // refusals not logged yet; guarded by mu
	lastFail time.Time // of the last failed connection's line; guarded by mu
	fails    int       // failed connections not logged yet; guarded by mu
	// Likewise for the permission violations.
	lastViolation time.Time
	violations    int
}

// failed logs a connection that failed for another reason than its
// credentials (a refused TLS handshake, an untrusted certificate, no
// server), at most one line per interval with the count since the last:
// retries at every backoff would flood the log, silence would hide why
// the host never shows.
func (l *authLog) failed(err error) {
	l.mu.Lock()
	l.fails++
	now := time.Now()
	if !l.lastFail.IsZero() && now.Sub(l.lastFail) < l.every {
		l.mu.Unlock()
		return
	}
	n := l.fails
	l.lastFail, l.fails = now, 0
	l.mu.Unlock()
	msg := "cannot connect to the conductor; retrying"
	if strings.Contains(strings.ToLower(err.Error()), "tls") || strings.Contains(err.Error(), "x509") {
		msg = "cannot connect to the conductor: the TLS handshake failed (check --tls-ca, and --tls-cert and --tls-key if the conductor requires a client certificate); retrying"
	}
	l.log.Warn(msg, "failures", n, "err", err)
}

// refusedAction logs the server's refusal of something workerd did (a
// permission violation), at most one line per interval: a host credential
// whose host id or types are not workerd's is refused every heartbeat.
func (l *authLog) refusedAction(err error) {
	l.mu.Lock()
	l.violations++
	now := time.Now()
	if !l.lastViolation.IsZero() && now.Sub(l.lastViolation) < l.every {
		l.mu.Unlock()
		return
	}
	n := l.violations
	l.lastViolation, l.violations = now, 0
	l.mu.Unlock()
	l.log.Error("the conductor refuses what this host's credential may not do: is --host-id the credential's host id, and is each pool's type one of its types?",
		"refusals", n, "err", err)
}

// refused reports whether err is the server refusing the client's
// credentials, and logs it if so and if the last line is old enough.
func (l *authLog) refused(err error, token string) bool {
	if !isAuthError(err) {
		return false
	}
	l.mu.Lock()
	l.refusal++
	now := time.Now()
	if !l.last.IsZero() && now.Sub(l.last) < l.every {
		l.mu.Unlock()
		return true
	}
	n := l.refusal
	l.last, l.refusal = now, 0
	l.mu.Unlock()
	why := "wrong token"
	if token == "" {
		why = "no token given"
	}
	l.log.Error("authentication failed: check --token / CONDUCTOR_TOKEN; retrying",
		"reason", why, "refusals", n, "err", err)
	return true
}

func isAuthError(err error) bool {
	return errors.Is(err, nats.ErrAuthorization) || errors.Is(err, nats.ErrAuthExpired) ||
		errors.Is(err, nats.ErrAuthRevoked) || errors.Is(err, nats.ErrAccountAuthExpired)
}
