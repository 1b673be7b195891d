package workerd

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
)

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
