// Messages to workers: the channel's message op written to one worker of
// a pool (SendMessage) or to each (Broadcast). Each slot holds the
// messages for its worker (messageC), which its session writes in order
// with its answers; a message waiting when the process exits goes to the
// slot's next process.

package broker

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/conductor-run/conductor/internal/proto"
)

// ErrNoWorker is matched by the error of SendMessage to a worker the
// pool does not run (no such index, or no process in its slot now).
var ErrNoWorker = errors.New("broker: no such worker")

// messageBuffer bounds the messages waiting for one worker; past it,
// SendMessage fails and Broadcast skips the worker.
const messageBuffer = 256

// ErrNoMessages is matched by the error of SendMessage to a worker that
// takes no messages: its ready op did not say "messages": true.
var ErrNoMessages = errors.New("broker: the worker takes no messages")

// SendMessage queues data (JSON) for the worker of index, which reads it
// as a message op. It fails with ErrNoWorker if the pool runs no process
// at that index (or is stopping), with ErrNoMessages if the worker takes
// none, and if the worker has messageBuffer messages waiting. During a
// recycle or an upgrade, the message goes to the new process of the
// index once it is up, else to the old one.
func (p *Pool) SendMessage(index int, data json.RawMessage) error {
	if !json.Valid(data) {
		return errors.New("broker: a message must be JSON")
	}
	if p.spec.Protocol == ProtocolNone {
		return fmt.Errorf("%w: pool %q speaks no channel", ErrNoWorker, p.spec.Name)
	}
	if p.intake.Err() != nil {
		return fmt.Errorf("%w: pool %q is stopping", ErrNoWorker, p.spec.Name)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	var to *slot
	for _, s := range p.slots {
		if s.index == index && s.ctx.Err() == nil && s.live() {
			to = s // the last: a replacement comes after the slot it replaces
		}
	}
	switch {
	case to == nil:
		return fmt.Errorf("%w: pool %q has no worker %d", ErrNoWorker, p.spec.Name, index)
	case !to.takesMessages.Load():
		return fmt.Errorf("%w: worker %d of pool %q did not say it takes them", ErrNoMessages, index, p.spec.Name)
	}
	select {
	case to.messageC <- data:
		return nil
	default:
		return fmt.Errorf("broker: worker %d of pool %q has %d messages waiting, its most", index, p.spec.Name, messageBuffer)
	}
}

// Broadcast queues data (JSON) for every worker of the pool running now
// that takes messages, once each, and returns how many it was queued
// for.
func (p *Pool) Broadcast(data json.RawMessage) (int, error) {
	if !json.Valid(data) {
		return 0, errors.New("broker: a message must be JSON")
	}
	if p.spec.Protocol == ProtocolNone || p.intake.Err() != nil {
		return 0, nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, s := range p.slots {
		if s.ctx.Err() != nil || !s.live() || !s.takesMessages.Load() {
			continue
		}
		select {
		case s.messageC <- data:
			n++
		default:
			s.log.Warn("broadcast not queued: the worker has its most messages waiting", "waiting", messageBuffer)
		}
	}
	return n, nil
}

// live reports whether the slot runs a process now.
func (s *slot) live() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.info.PID != 0
}

// message writes data to the worker as a message op.
func (ss *session) message(data json.RawMessage) {
	ss.queue(proto.Message{Op: proto.OpMessage, Data: data})
}
