// Messages from the conductor side: the reader queues each message op
// (messageLocked) for the WithMessages handler, which one goroutine of
// Run's calls in order (startMessages), until Run ends.

package worker

import (
	"context"
	"encoding/json"
	"sync"
)

// A Message is one message the conductor side sent the worker
// (WithMessages).
type Message struct {
	// Data is the message, JSON as sent.
	Data json.RawMessage

	srv *server
}

// maxMessagesWaiting bounds the messages waiting for the handler.
const maxMessagesWaiting = 1024

// startMessages starts the goroutine that calls h with each message, if
// h is set, and returns its stop, which Run calls as it returns: it
// cancels h's context, waits for h to return, and drops the messages
// still queued.
func (s *server) startMessages(h func(context.Context, *Message)) (stop func()) {
	if h == nil {
		return func() {}
	}
	q := make(chan json.RawMessage, maxMessagesWaiting)
	s.mu.Lock()
	s.msgQ = q
	s.mu.Unlock()
	ctx, cancel := context.WithCancel(s.base)
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-ctx.Done():
				return
			case data := <-q:
				s.callMessage(ctx, h, data)
			}
		}
	})
	return func() {
		cancel()
		wg.Wait()
	}
}

// callMessage calls h, recovering a panic.
func (s *server) callMessage(ctx context.Context, h func(context.Context, *Message), data json.RawMessage) {
	defer func() {
		if v := recover(); v != nil {
			s.log.Error("worker: message handler panicked", "panic", v)
		}
	}()
	h(ctx, &Message{Data: data, srv: s})
}

// messageLocked queues data for the message handler; without one, or
// past maxMessagesWaiting, it is dropped.
func (s *server) messageLocked(data json.RawMessage) {
	if s.msgQ == nil {
		return
	}
	select {
	case s.msgQ <- data:
	default:
		s.log.Warn("worker: dropping a message: its handler has too many waiting", "waiting", maxMessagesWaiting)
	}
}
