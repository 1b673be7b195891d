package hostsvc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"github.com/nats-io/nats.go"

	"github.com/conductor-run/conductor/internal/names"
	"github.com/conductor-run/conductor/internal/wire"
)

// The host's end of the store (store.go).

// Proxied reports whether the host writes its states through conductord
// (Store): it has a credential of its own, whose account may not write
// the store itself.
func (c *Caller) Proxied() bool { return c != nil && c.id != "" }

// StoreSubject is the subject of the host's writes of job type typ's
// jobs through conductord, for a request of a batch of
// wire.AppendStoreItem; conductord answers a JSON array of
// wire.StoreResult, one per item, in order.
func (c *Caller) StoreSubject(typ string) string { return c.sp.StoreAs(c.id, typ) }

// ErrConflict is the error of a StoreResult whose key was not at the
// revision expected.
var ErrConflict = errors.New("the state changed since it was read")

// ResultError is the error a StoreResult reports, nil if written.
func ResultError(r wire.StoreResult) error {
	switch {
	case r.Conflict:
		return fmt.Errorf("store: %w: %s", ErrConflict, r.Error)
	case r.Error != "":
		return fmt.Errorf("store: %s", r.Error)
	case r.Rev == 0:
		return errors.New("store: no revision in conductord's answer")
	}
	return nil
}

// ParseStoreAnswer reads conductord's answer to a store request of n
// items.
func ParseStoreAnswer(m *nats.Msg, n int) ([]wire.StoreResult, error) {
	if code, _ := strconv.Atoi(m.Header.Get(names.HeaderStatus)); code != http.StatusOK {
		if st := m.Header.Get(names.HeaderNATSStatus); st != "" && len(m.Data) == 0 {
			return nil, fmt.Errorf("store through conductord: status %s %s", st, m.Header.Get(names.HeaderNATSDescription))
		}
		var e struct {
			Error string `json:"error"`
		}
		_ = json.Unmarshal(m.Data, &e)
		return nil, fmt.Errorf("store through conductord refused (%d): %s", code, e.Error)
	}
	var rs []wire.StoreResult
	if err := json.Unmarshal(m.Data, &rs); err != nil {
		return nil, fmt.Errorf("store through conductord: unreadable answer: %w", err)
	}
	if len(rs) != n {
		return nil, fmt.Errorf("store through conductord: %d outcomes for %d writes", len(rs), n)
	}
	return rs, nil
}

// Store writes one item of job type typ through conductord and returns
// its new revision.
func (c *Caller) Store(ctx context.Context, typ string, it wire.StoreItem) (uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, requestWait)
	defer cancel()
	m, err := c.nc.RequestWithContext(ctx, c.StoreSubject(typ), wire.AppendStoreItem(nil, it))
	if err != nil {
		return 0, fmt.Errorf("store through conductord: %w", err)
	}
	rs, err := ParseStoreAnswer(m, 1)
	if err != nil {
		return 0, err
	}
	if err := ResultError(rs[0]); err != nil {
		return 0, err
	}
	return rs[0].Rev, nil
}
