package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/conductor-run/conductor/internal/subject"
	"github.com/conductor-run/conductor/internal/wire"
)

// ErrNoWorker is matched by the error of SendMessage to a worker that is
// not there: its host is not live, does not run its pool, or runs no
// worker of that index now.
var ErrNoWorker = errors.New("conductor: no such worker")

// ErrNoMessages is matched by the error of SendMessage to a worker that
// takes no messages (its ready op did not say so; the Go SDK's
// worker.WithMessages does).
var ErrNoMessages = errors.New("conductor: the worker takes no messages")

// SendMessage sends data, encoded with json.Marshal, to the worker of
// index worker in pool on host (okanjo's sendMessageToWorker): the
// worker reads it as a message op (the Go SDK: worker.WithMessages). It
// returns once the host has queued it for the worker, whose answer, if
// any, is the worker's own business (a request of its own, Job.Request).
// A worker that is gone is an error matching ErrNoWorker.
func (c *Client) SendMessage(ctx context.Context, host, pool string, worker int, data any) error {
	if err := c.forOperators("SendMessage"); err != nil {
		return err
	}
	cmd, err := messageCommand(wire.CommandMessage, pool, data)
	if err != nil {
		return err
	}
	if err := subject.Token("host id", host); err != nil {
		return fmt.Errorf("%w: %w", ErrBadCommand, err)
	}
	cmd.Worker = &worker
	b, _ := json.Marshal(cmd)
	res := c.ask(ctx, host, b)
	switch {
	case res.OK:
		return nil
	case strings.HasPrefix(res.Error, "no such worker") || res.Error == "workerd does not listen for commands":
		return fmt.Errorf("%w: %s on host %s: %s", ErrNoWorker, pool, host, res.Error)
	case strings.Contains(res.Error, "takes no messages"):
		return fmt.Errorf("%w: worker %d of pool %q on host %s", ErrNoMessages, worker, pool, host)
	}
	return fmt.Errorf("%w: message to worker %d of pool %q on host %s: %s", ErrCommandRefused, worker, pool, host, res.Error)
}

// Broadcast sends data, encoded with json.Marshal, to every worker of
// pool (AllPools: of every pool) on every live host that runs it, or on
// host alone if not empty, once each, and returns each host's answer:
// how many of its workers it queued the message for (Delivered).
func (c *Client) Broadcast(ctx context.Context, pool, host string, data any) ([]CommandResult, error) {
	if err := c.forOperators("Broadcast"); err != nil {
		return nil, err
	}
	cmd, err := messageCommand(wire.CommandBroadcast, pool, data)
	if err != nil {
		return nil, err
	}
	hosts, err := c.commandHosts(ctx, pool, host)
	if err != nil {
		return nil, err
	}
	return c.fanOut(ctx, hosts, cmd), nil
}

// maxMessage bounds a message's encoding: it must fit a line of the
// channel with room to spare.
const maxMessage = 1 << 20

func messageCommand(op, pool string, data any) (wire.Command, error) {
	if pool != AllPools || op != wire.CommandBroadcast {
		if err := subject.Token("pool name", pool); err != nil {
			return wire.Command{}, fmt.Errorf("%w: %w", ErrBadCommand, err)
		}
	}
	b, err := json.Marshal(data)
	if err != nil {
		return wire.Command{}, fmt.Errorf("%w: encode the message: %w", ErrBadCommand, err)
	}
	if len(b) > maxMessage {
		return wire.Command{}, fmt.Errorf("%w: a message of %d bytes, over %d", ErrBadCommand, len(b), maxMessage)
	}
	return wire.Command{Op: op, Pool: pool, Data: b}, nil
}
