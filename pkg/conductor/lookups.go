package conductor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/conductor-run/conductor/internal/startstop"
	"github.com/conductor-run/conductor/internal/subject"
	"github.com/conductor-run/conductor/pkg/lookup"
)

// The named lookups (pkg/lookup, docs/lookups.md): conductord keeps them
// in the namespace's lookup bucket, seeds them at start, serves them by
// request/reply (the lookup micro service) and over HTTP.

// startLookups opens the lookups, seeds them, and serves them on NATS.
func (c *Conductor) startLookups(ctx context.Context) error {
	var store *lookup.Store
	err := placeAgain(ctx, func() error {
		var err error
		store, err = lookup.Open(ctx, c.js, lookup.Config{Bucket: c.space.LookupBucket(), Memory: c.cfg.MemoryStorage, MaxBytes: c.lookupMaxBytes(), Replicas: c.replicas})
		return err
	})
	if err == nil && c.replicas > 1 {
		err = c.readFromLeader(ctx, subject.KVStream(c.space.LookupBucket()), "lookup bucket")
	}
	if unplaceable(err) {
		return c.placeErr("lookup bucket", err)
	}
	if err != nil {
		return fmt.Errorf("conductor: %w", err)
	}
	if err := store.Seed(ctx, c.cfg.Lookups); err != nil {
		return fmt.Errorf("conductor: seed the lookups: %w", err)
	}
	if c.cfg.LookupsFile != "" {
		if err := store.SeedFile(ctx, c.cfg.LookupsFile); err != nil {
			return fmt.Errorf("conductor: seed the lookups: %w", err)
		}
	}
	// Gets are answered from a copy of what was read, which the feed
	// keeps true before it tells the hosts of a change; writes go through
	// it, so that it drops their keys.
	c.lookupCache = store.NewCache(lookup.CacheConfig{MaxEntries: serviceCacheEntries, MaxBytes: serviceCacheBytes})
	svc, err := lookup.Serve(c.nc, store, c.space.LookupService(), lookup.WithCallers(c.space.LookupCallers(), hostLookupRate),
		lookup.WithCache(c.lookupCache))
	if err != nil {
		return fmt.Errorf("conductor: %w", err)
	}
	c.lookups, c.lookupSvc = store, svc
	// The hosts' caches follow the changes (pkg/lookup, Cache).
	feedLog := c.log.With("component", "lookups")
	c.lookupFeed = startstop.NewFunc(func(ctx context.Context) {
		startstop.Retry(ctx, func(ctx context.Context) error {
			return store.Feed(ctx, c.nc, c.space.LookupFeed(), 0, c.lookupCache)
		}, func(err error, wait time.Duration) {
			feedLog.Warn("cannot publish the lookups' changes for the hosts' caches; retrying", "err", err, "retry_in", wait)
		})
	})
	return c.lookupFeed.Start(context.WithoutCancel(ctx))
}

// The service's cache of the lookups read: 100,000 values, 64 MiB.
const (
	serviceCacheEntries = 100_000
	serviceCacheBytes   = 64 << 20
)

// hostLookupRate bounds each host's lookup requests a second (a burst of
// as many): far past what a host's workers ask of a lookup uncached, so
// that one flooding host is answered 429 and the others are served.
const hostLookupRate = 20_000

// lookupMaxBytes bounds the lookups' bucket: 1 GiB, or a sixteenth of
// what the embedded server may store if that is less (the server reserves
// a bucket's bound at once: a small disk has no room for 1 GiB).
func (c *Conductor) lookupMaxBytes() int64 {
	const most = lookup.DefaultMaxBytes
	if c.ns == nil {
		return most
	}
	js := c.ns.JetStreamConfig()
	if js == nil {
		return most
	}
	limit := js.MaxStore
	if c.cfg.MemoryStorage {
		limit = js.MaxMemory
	}
	if limit <= 0 {
		return most
	}
	return min(most, max(limit/16, 1<<20))
}

// stopLookups stops the lookup service and its feed.
func (c *Conductor) stopLookups() {
	if c.lookupSvc != nil {
		_ = c.lookupSvc.Stop()
	}
	if c.lookupFeed != nil {
		c.lookupFeed.Stop()
	}
}

// maxLookupBody bounds the body of a PUT of a lookup's key: a value at its
// largest, with room for whitespace the store compacts away.
const maxLookupBody = 4 * lookup.DefaultMaxValue

// getLookupKeys serves GET /v1/lookups/{name}: {"keys":[…]}.
func (c *Conductor) getLookupKeys(w http.ResponseWriter, r *http.Request) {
	keys, err := c.lookups.Keys(r.Context(), r.PathValue("name"))
	if err != nil {
		lookupError(w, err)
		return
	}
	if keys == nil {
		keys = []string{}
	}
	writeJSON(w, http.StatusOK, map[string][]string{"keys": keys})
}

// getLookup serves GET /v1/lookups/{name}/{key...}: the value, as stored.
func (c *Conductor) getLookup(w http.ResponseWriter, r *http.Request) {
	v, _, err := c.lookupCache.Get(r.Context(), r.PathValue("name"), r.PathValue("key"))
	if err != nil {
		lookupError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, v)
}

// putLookup serves PUT /v1/lookups/{name}/{key...}, the body the value:
// 204 once stored.
func (c *Conductor) putLookup(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxLookupBody+1))
	if err != nil {
		writeError(w, http.StatusBadRequest, "read the body: "+err.Error())
		return
	}
	if len(body) > maxLookupBody {
		writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("a value of more than %d bytes", maxLookupBody))
		return
	}
	if _, err := c.lookupCache.Set(r.Context(), r.PathValue("name"), r.PathValue("key"), json.RawMessage(body)); err != nil {
		lookupError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// deleteLookup serves DELETE /v1/lookups/{name}/{key...}: 204.
func (c *Conductor) deleteLookup(w http.ResponseWriter, r *http.Request) {
	if err := c.lookupCache.Delete(r.Context(), r.PathValue("name"), r.PathValue("key")); err != nil {
		lookupError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// lookupError answers err, a lookup's: 400, 404, 413, or 503.
func lookupError(w http.ResponseWriter, err error) {
	code := http.StatusServiceUnavailable
	switch {
	case errors.Is(err, lookup.ErrInvalid):
		code = http.StatusBadRequest
	case errors.Is(err, lookup.ErrNotFound):
		code = http.StatusNotFound
	case errors.Is(err, lookup.ErrTooMany):
		code = http.StatusRequestEntityTooLarge
	}
	writeError(w, code, err.Error())
}
