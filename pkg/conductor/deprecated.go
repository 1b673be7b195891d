package conductor

import (
	"time"

	"github.com/nats-io/nats.go"

	"github.com/conductor-run/conductor/pkg/client"
)

// The Go client for submitters moved to package client
// (github.com/conductor-run/conductor/pkg/client), which links neither the
// NATS server nor the broker. The names below point at it, so that code
// written against this package keeps building; new code should use
// package client. Three things did not carry over: Event is now one flat
// record (client.Event), so EventFields, the internal record it embedded,
// is gone; and the Header* constants of the NATS submission and
// broker.Env* are documented in docs/protocol.md rather than exported.

// Deprecated: use client.Client.
type Client = client.Client

// Deprecated: use client.Config.
type ClientConfig = client.Config

// Deprecated: use client.Connect.
func Connect(url string, cfg client.Config, opts ...nats.Option) (*client.Client, error) {
	return client.Connect(url, cfg, opts...)
}

// Deprecated: use client.New.
func NewClient(nc *nats.Conn, cfg client.Config) (*client.Client, error) {
	return client.New(nc, cfg)
}

// Deprecated: use client.Job.
type Job = client.Job

// Deprecated: use client.Attempt.
type Attempt = client.Attempt

// Deprecated: use client.Status.
type Status = client.Status

// Deprecated: use the constants of package client.
const (
	StatusQueued    = client.StatusQueued
	StatusRunning   = client.StatusRunning
	StatusSucceeded = client.StatusSucceeded
	StatusFailed    = client.StatusFailed
	StatusDead      = client.StatusDead
	StatusCancelled = client.StatusCancelled
)

// Deprecated: use client.Priority.
type Priority = client.Priority

// Deprecated: use the constants of package client.
const (
	PriorityHigh   = client.PriorityHigh
	PriorityNormal = client.PriorityNormal
	PriorityLow    = client.PriorityLow
)

// Deprecated: use client.ParsePriority.
func ParsePriority(s string) (client.Priority, error) { return client.ParsePriority(s) }

// Deprecated: use client.SubmitOption.
type SubmitOption = client.SubmitOption

// Deprecated: use client.WithIdempotencyKey.
func WithIdempotencyKey(key string) client.SubmitOption { return client.WithIdempotencyKey(key) }

// Deprecated: use client.WithBatch.
func WithBatch(id string) client.SubmitOption { return client.WithBatch(id) }

// Deprecated: use client.WithTimeout.
func WithTimeout(d time.Duration) client.SubmitOption { return client.WithTimeout(d) }

// Deprecated: use client.WithDelay.
func WithDelay(d time.Duration) client.SubmitOption { return client.WithDelay(d) }

// Deprecated: use client.WithPriority.
func WithPriority(p client.Priority) client.SubmitOption { return client.WithPriority(p) }

// Deprecated: use client.WithMaxAttempts.
func WithMaxAttempts(n int) client.SubmitOption { return client.WithMaxAttempts(n) }

// Deprecated: use the errors of package client (these are the same values).
var (
	ErrJobNotFound    = client.ErrJobNotFound
	ErrBadPayload     = client.ErrBadPayload
	ErrJobEnded       = client.ErrJobEnded
	ErrNotDead        = client.ErrNotDead
	ErrBadQuery       = client.ErrBadQuery
	ErrBatchNotFound  = client.ErrBatchNotFound
	ErrBadCommand     = client.ErrBadCommand
	ErrPoolNotFound   = client.ErrPoolNotFound
	ErrCommandRefused = client.ErrCommandRefused
)

// Deprecated: use client.PayloadTooLargeError.
type PayloadTooLargeError = client.PayloadTooLargeError

// Deprecated: use client.JobQuery.
type JobQuery = client.JobQuery

// Deprecated: use the constants of package client.
const (
	DefaultListLimit = client.DefaultListLimit
	MaxListLimit     = client.MaxListLimit
	MaxBatchJobs     = client.MaxBatchJobs
)

// Deprecated: use client.Batch.
type Batch = client.Batch

// Deprecated: use client.Worker.
type Worker = client.Worker

// Deprecated: use client.Host.
type Host = client.Host

// Deprecated: use client.Pool.
type Pool = client.Pool

// Deprecated: use client.PoolHost.
type PoolHost = client.PoolHost

// Deprecated: use client.PoolOp.
type PoolOp = client.PoolOp

// Deprecated: use the constants of package client.
const (
	OpDrain    = client.OpDrain
	OpResume   = client.OpResume
	OpRecycle  = client.OpRecycle
	OpRestart  = client.OpRestart
	OpResize   = client.OpResize
	OpUpgrade  = client.OpUpgrade
	OpShutdown = client.OpShutdown
	AllPools   = client.AllPools
)

// Deprecated: use client.PoolCommand.
type PoolCommand = client.PoolCommand

// Deprecated: use client.CommandResult.
type CommandResult = client.CommandResult

// Deprecated: use client.Event. Its fields, once in EventFields, are now
// its own.
type Event = client.Event

// Deprecated: use the constants of package client.
const (
	ScopeWorker = client.ScopeWorker
	ScopePool   = client.ScopePool

	EventWorkerStart   = client.EventWorkerStart
	EventWorkerReady   = client.EventWorkerReady
	EventWorkerExit    = client.EventWorkerExit
	EventWorkerMessage = client.EventWorkerMessage
	EventPoolFailed    = client.EventPoolFailed
	EventPoolRecovered = client.EventPoolRecovered
	EventPoolDrained   = client.EventPoolDrained
	EventPoolResumed   = client.EventPoolResumed
	EventPoolResized   = client.EventPoolResized
	EventPoolRecycled  = client.EventPoolRecycled
	EventPoolUpgraded  = client.EventPoolUpgraded
	EventPoolRollback  = client.EventPoolRollback
	EventPoolStopped   = client.EventPoolStopped

	ReasonStart   = client.ReasonStart
	ReasonRestart = client.ReasonRestart
	ReasonFailure = client.ReasonFailure
	ReasonRecycle = client.ReasonRecycle
	ReasonUpgrade = client.ReasonUpgrade
	ReasonResize  = client.ReasonResize
	ReasonStop    = client.ReasonStop
)
