package conductor

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/kballard/go-shellquote"

	"github.com/conductor-run/conductor/internal/wire"
	"github.com/conductor-run/conductor/pkg/client"
)

// maxCommandBody bounds the body of a pool command, in bytes.
const maxCommandBody = 64 << 10

// commandBody is the body of POST /v1/pools/{name}/{op}; a nil field was
// not given.
type commandBody struct {
	Count   *int            `json:"count"`
	Cmd     json.RawMessage `json:"cmd"`
	Health  *string         `json:"health"`
	Timeout *string         `json:"timeout"`
}

// commandAnswer is the answer to a pool command: 202 when a host accepted
// it, 502 with Error when none did.
type commandAnswer struct {
	Pool  string                 `json:"pool"`
	Op    client.PoolOp          `json:"op"`
	Hosts []client.CommandResult `json:"hosts"`
	Error string                 `json:"error,omitempty"`
}

// poolCommand serves POST /v1/pools/{name}/{op}.
func (c *Conductor) poolCommand(op client.PoolOp) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		pool := r.PathValue("name")
		cmd, err := readCommand(op, http.MaxBytesReader(w, r.Body, maxCommandBody))
		if err == nil && cmd.Op == client.OpResize && cmd.Count > c.cfg.MaxPoolSize {
			err = fmt.Errorf("%w: count %d is over the maximum pool size of %d (conductord --max-pool-size)",
				client.ErrBadCommand, cmd.Count, c.cfg.MaxPoolSize)
		}
		if err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
		host := r.URL.Query().Get("host")
		results, err := c.client.Command(r.Context(), pool, cmd, host)
		if pool != client.AllPools && (err == nil || errors.Is(err, client.ErrCommandRefused)) {
			results, err = c.ofPoolType(pool, op, results)
		}
		c.log.Info("pool command", "pool", pool, "op", op, "host", host, "hosts", len(results), "err", err)
		switch {
		case errors.Is(err, client.ErrBadCommand):
			writeError(w, http.StatusBadRequest, err.Error())
		case errors.Is(err, client.ErrPoolNotFound):
			writeError(w, http.StatusNotFound, err.Error())
		case errors.Is(err, client.ErrCommandRefused):
			writeJSON(w, http.StatusBadGateway, commandAnswer{Pool: pool, Op: op, Hosts: results, Error: err.Error()})
		case err != nil:
			writeError(w, http.StatusServiceUnavailable, err.Error())
		default:
			writeJSON(w, http.StatusAccepted, commandAnswer{Pool: pool, Op: op, Hosts: results})
		}
	}
}

// ofPoolType keeps, of a command's results, those of the hosts whose
// credential is of pool's type: the Client sends a command to every host
// whose heartbeat names the pool, and a host of another type that says it
// runs it would have its answer reported (a drain that no real host took
// shown as done). The error is the Client's, for the results kept.
func (c *Conductor) ofPoolType(pool string, op client.PoolOp, results []client.CommandResult) ([]client.CommandResult, error) {
	results = slices.DeleteFunc(results, func(r client.CommandResult) bool { return !c.access.hostMayRun(r.Host, pool) })
	switch {
	case len(results) == 0:
		return nil, fmt.Errorf("%w: no live host runs pool %q", client.ErrPoolNotFound, pool)
	case !slices.ContainsFunc(results, func(r client.CommandResult) bool { return r.OK }):
		why := make([]string, len(results))
		for i, r := range results {
			why[i] = r.Host + ": " + r.Error
		}
		return results, fmt.Errorf("%w: %s of pool %q: %s", client.ErrCommandRefused, op, pool, strings.Join(why, "; "))
	}
	return results, nil
}

// readCommand decodes the body of a pool command (empty is fine) into a
// PoolCommand; the fields are checked against op, their values by
// Client.Command.
func readCommand(op client.PoolOp, body io.Reader) (client.PoolCommand, error) {
	var b commandBody
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&b); err != nil && !errors.Is(err, io.EOF) {
		return client.PoolCommand{}, fmt.Errorf("bad body: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return client.PoolCommand{}, errors.New("bad body: want one JSON object")
	}
	if err := wire.CheckCommandFields(string(op), b.set()); err != nil {
		return client.PoolCommand{}, fmt.Errorf("%w: %w", client.ErrBadCommand, err)
	}
	switch {
	case op == client.OpResize && b.Count == nil:
		return client.PoolCommand{}, errors.New(`resize needs a body {"count":N}`)
	case op == client.OpUpgrade && b.Cmd == nil:
		return client.PoolCommand{}, errors.New(`upgrade needs a body {"cmd":["prog","arg"]} or {"cmd":"prog arg"}`)
	}
	cmd := client.PoolCommand{Op: op}
	if b.Count != nil {
		cmd.Count = *b.Count
	}
	var err error
	if b.Cmd != nil {
		if cmd.Cmd, err = commandLine(b.Cmd); err != nil {
			return client.PoolCommand{}, err
		}
	}
	if cmd.Health, err = duration("health", b.Health); err != nil {
		return client.PoolCommand{}, err
	}
	if cmd.Timeout, err = duration("timeout", b.Timeout); err != nil {
		return client.PoolCommand{}, err
	}
	return cmd, nil
}

// set names the fields given in b.
func (b commandBody) set() []string {
	var set []string
	if b.Count != nil {
		set = append(set, "count")
	}
	if b.Cmd != nil {
		set = append(set, "cmd")
	}
	if b.Health != nil {
		set = append(set, "health")
	}
	if b.Timeout != nil {
		set = append(set, "timeout")
	}
	return set
}

// commandLine reads "cmd": an array of words, or one string split into
// words as a shell splits them.
func commandLine(raw json.RawMessage) ([]string, error) {
	var line string
	if json.Unmarshal(raw, &line) == nil {
		words, err := shellquote.Split(line)
		if err != nil {
			return nil, fmt.Errorf("bad cmd %q: %w", line, err)
		}
		return words, nil
	}
	var words []string
	if err := json.Unmarshal(raw, &words); err != nil {
		return nil, errors.New(`bad cmd: want an array of strings ["prog","arg"] or a string "prog arg"`)
	}
	return words, nil
}

// duration parses the duration field name, if given.
func duration(name string, s *string) (time.Duration, error) {
	if s == nil {
		return 0, nil
	}
	d, err := time.ParseDuration(*s)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("bad %s %q: want a duration such as 10s", name, *s)
	}
	return d, nil
}
