// Package conductor is the hub of a conductor cluster, as a library: the
// Conductor that conductord runs (JetStream, the job ends, the HTTP API),
// and RunBatch, the batch model of okanjo-conductor. Services that submit
// jobs use package client (github.com/conductor-run/conductor/pkg/client)
// instead, which links neither the NATS server nor the broker; the
// Conductor runs a client.Client of its own (Conductor.Client) behind its
// HTTP API.
//
// # The conductor
//
// A Conductor embeds a NATS server with JetStream (or connects to one with
// Config.NATSURL). Jobs live in a work-queue stream, one subject per job
// type (conductor.<namespace>.jobs.<type>); job states live in a key-value
// bucket keyed by job id; nothing of the queue is held in the conductor's
// memory. On a NATS cluster every stream and bucket is replicated
// (Config.Replicas: 3 by default there, 1 embedded; docs/deployment.md).
// Every host's workerd pulls the jobs of its pools, runs them in
// worker processes, and writes their states; the conductor aggregates the
// hosts' heartbeats and the job ends workerd announces, and serves the HTTP API.
//
// # Submitting jobs
//
// Go services use package client:
//
//	c, err := client.Connect("nats://127.0.0.1:4222", client.Config{})
//	job, err := c.SubmitAndWait(ctx, "squares", 7)
//	fmt.Println(job.Status, string(job.Result)) // succeeded 49
//
// Services in other languages publish the JSON payload to
// conductor.<namespace>.jobs.<type> on JetStream, or POST it to
// /v1/jobs/{type}: see docs/protocol.md and docs/api.md. A NATS request to
// conductor.<namespace>.submit.<type> queues the job and answers when it
// ends.
//
// # Pool commands and events
//
// POST /v1/pools/{name}/{op} drains, resumes, recycles, restarts, resizes,
// upgrades or shuts down a pool on every live host that runs it (or on
// one), and GET /v1/events follows what the hosts' supervisors do; both go
// through the Conductor's client (client.Client.Command and Events).
//
// # Deprecated names
//
// The names of the client that this package once held (Client, Job,
// Status, WithTimeout, ...) remain as deprecated aliases of package
// client's.
//
// # Batches
//
// RunBatch runs a generator's jobs to the end. Without a Client it needs
// nothing else running: it embeds a conductor and forks the program itself
// as its workers, as the seeds' demo did (examples/squares-batch).
package conductor
