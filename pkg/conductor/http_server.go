package conductor

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/conductor-run/conductor/internal/startstop"
)

// httpServer serves the HTTP API on its listener. It is a
// startstop.Service: Start listens, and a goroutine of its own serves
// until Stop, which gives the calls in flight httpShutdownGrace to finish
// (a long ?wait= is cut off after that) and closes the rest. It owns the
// listener and the server; ln is set by Start, before any reader.
type httpServer struct {
	startstop.Base
	listen  string
	handler http.Handler
	tls     *tls.Config // nil: plain HTTP
	conns   int         // the most connections open at once
	log     *slog.Logger
	ln      net.Listener
}

// httpShutdownGrace is how long the calls in flight get once Stop begins.
const httpShutdownGrace = 10 * time.Second

func newHTTPServer(listen string, handler http.Handler, tlsConfig *tls.Config, conns int, log *slog.Logger) *httpServer {
	return &httpServer{listen: listen, handler: handler, tls: tlsConfig, conns: conns, log: log}
}

// Start listens and serves.
func (h *httpServer) Start(ctx context.Context) error {
	ctx, ok, done := h.StartInit(ctx)
	if !ok {
		return nil
	}
	ln, err := net.Listen("tcp", h.listen)
	if err != nil {
		done()
		return fmt.Errorf("conductor: http listen: %w", err)
	}
	ln = newLimitListener(ln, h.conns)
	if h.tls != nil {
		// Mutual TLS is NATS's: the API takes a client certificate if
		// one is given, and a browser's dashboard without one.
		cfg := h.tls.Clone()
		if cfg.ClientAuth == tls.RequireAndVerifyClientCert {
			cfg.ClientAuth = tls.VerifyClientCertIfGiven
		}
		ln = tls.NewListener(ln, cfg)
	}
	h.ln = ln
	// A client that sends its headers slowly, or holds an idle
	// connection, is cut off: connections are bounded (limitListener).
	srv := &http.Server{Handler: h.handler, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute, MaxHeaderBytes: 64 << 10}
	go func() {
		defer done()
		served := make(chan struct{})
		go func() {
			defer close(served)
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				h.log.Error("http server", "err", err)
			}
		}()
		<-ctx.Done()
		shutdownCtx, cancel := context.WithTimeout(context.Background(), httpShutdownGrace)
		if srv.Shutdown(shutdownCtx) != nil {
			_ = srv.Close()
		}
		cancel()
		<-served
	}()
	h.log.Info("http listening", "addr", ln.Addr().String(), "tls", h.tls != nil)
	return nil
}

// addr is the address the server listens on, "" before it does.
func (h *httpServer) addr() string {
	if h.ln == nil {
		return ""
	}
	return h.ln.Addr().String()
}

// DefaultMaxPoolSize is Config.MaxPoolSize's default: the largest count a
// resize through the HTTP API may ask of a pool.
const DefaultMaxPoolSize = 1000

// checkHTTP checks the HTTP API's part of the Config.
func (c Config) checkHTTP() error {
	for _, name := range c.HTTPHosts {
		if err := checkHTTPHost(name); err != nil {
			return err
		}
	}
	switch {
	case c.MaxBatchBytes < 0:
		return fmt.Errorf("conductor: bad max batch bytes %d: want a number of bytes, or 0 for the default", c.MaxBatchBytes)
	case c.MaxPoolSize < 0:
		return fmt.Errorf("conductor: bad max pool size %d: want 1 or more, or 0 for the default", c.MaxPoolSize)
	case c.EventBuffer < 0:
		return fmt.Errorf("conductor: bad event buffer %d: want a number of bytes, or 0 for the default", c.EventBuffer)
	case c.NamespaceMaxBytes < 0 || c.NamespaceMaxMemory < 0 || c.NamespaceMaxStreams < 0 || c.NamespaceMaxConsumers < 0:
		return fmt.Errorf("conductor: bad namespace bounds: want 1 or more, or 0 for the default")
	case c.MaxJobTypes < 0:
		return fmt.Errorf("conductor: bad max job types %d: want 1 or more, or 0 for the default", c.MaxJobTypes)
	case c.MaxEventStreams < 0 || c.MaxBatchReads < 0 || c.MaxHTTPConns < 0:
		return fmt.Errorf("conductor: bad HTTP bounds %d event streams, %d batch reads, %d connections: want 1 or more, or 0 for the default", c.MaxEventStreams, c.MaxBatchReads, c.MaxHTTPConns)
	case c.EventWriteTimeout < 0:
		return fmt.Errorf("conductor: bad event write timeout %s: want a positive duration, or 0 for the default", c.EventWriteTimeout)
	}
	return nil
}
