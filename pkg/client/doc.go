// Package client is the Go client of a conductor, for services that submit
// jobs and read their results: it talks to the conductor's NATS
// (JetStream) and links neither the NATS server nor the broker, so a
// submitter stays small.
//
// # Submitting jobs
//
// Connect dials the conductor's NATS; New takes a connection the caller
// already has. Submit queues a job of a type (the pool that runs it) with
// a JSON payload and returns its id once the job is durably queued; Wait
// blocks until it ends; SubmitAndWait does both:
//
//	c, err := client.Connect("nats://127.0.0.1:4222", client.Config{})
//	if err != nil { ... }
//	defer c.Close()
//	job, err := c.SubmitAndWait(ctx, "squares", 7)
//	fmt.Println(job.Status, string(job.Result)) // succeeded 49
//
// Options tune one submission: WithIdempotencyKey (a repeat is the same
// job), WithPriority, WithDelay, WithTimeout, WithMaxAttempts. SubmitBatch
// queues many jobs as one Batch, whose progress Batch reports.
//
// # Credentials
//
// A conductor with credentials (docs/security.md) wants a token from every
// connection: give WithToken(token) to Connect. A submitter's credential
// has no JetStream of its own: set Config.Submitter, and the Client
// submits and reads through conductord (jobs submitted on its behalf, or
// of its types); what needs an operator returns ErrForbidden.
//
//	c, err := client.Connect("tls://conductor.example:4222", client.Config{Submitter: true},
//		client.WithToken(token), nats.RootCAs("ca.pem"))
//
// # Reading jobs
//
// A Job is the state the conductor stores for a job, updated by the host
// that runs it: its Status (queued, running, succeeded, failed, dead,
// cancelled), its Result or Error, and the History of its attempts. A
// Client that listens to the hosts reads a queued job that a host has
// fetched ahead as held (Job.HeldBy). Job reads one, Jobs lists them by
// status, type and time (a JobQuery), and DeadJobs the dead ones, payloads
// included. Cancel stops a job that has not ended (one that no worker runs
// reads cancelled at once); Requeue queues a dead one again.
//
// # Pools and hosts
//
// Every host's workerd announces its pools and workers once a second: the
// Client learns them as Hosts and Workers. Command sends a PoolCommand
// (drain, resume, recycle, restart, resize, upgrade, shutdown) to a pool
// on every host that runs it, Events follows what the hosts'
// supervisors do, as Event values, and Logs reads the workers' output,
// the last lines each host kept then the new ones, as LogLine values.
//
// The same records come out of conductord's HTTP API (docs/api.md), and
// encode to the same JSON. Errors to branch on are the Err variables,
// wrapped with what they concern.
package client
