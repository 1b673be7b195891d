// Package conductor is the hub of a conductor cluster, as a library: the
// Conductor that conductord runs, the Client other Go services use to submit
// jobs and wait for results, and RunBatch, the batch model of
// okanjo-conductor.
//
// # The conductor
//
// A Conductor embeds a NATS server with JetStream (or connects to one with
// Config.NATSURL). Jobs live in a work-queue stream, one subject per job
// type (conductor.<namespace>.jobs.<type>); job states live in a key-value
// bucket keyed by job id; nothing of the queue is held in the conductor's
// memory. Every host's workerd pulls the jobs of its pools, runs them in
// worker processes, and writes their states; the conductor aggregates the
// hosts' heartbeats and the job ends workerd announces, and serves the HTTP API.
//
// # Submitting jobs
//
//	c, err := conductor.Connect("nats://127.0.0.1:4222", conductor.ClientConfig{})
//	job, err := c.SubmitAndWait(ctx, "squares", 7)
//	fmt.Println(job.Status, string(job.Result)) // succeeded 49
//
// Services in other languages publish the JSON payload to
// conductor.<namespace>.jobs.<type> on JetStream, or POST it to
// /v1/jobs/{type}: see docs/protocol.md and docs/api.md.
//
// # Pool commands and events
//
// Client.Command drains, resumes, recycles, restarts, resizes, upgrades or
// shuts down a pool on every live host that runs it (or on one), by a NATS
// request to each host's workerd, and returns each host's answer:
//
//	res, err := c.Command(ctx, "squares", conductor.PoolCommand{Op: conductor.OpResize, Count: 4}, "")
//
// Client.Events follows what the hosts' supervisors do (workers starting,
// exiting, pools failing, drained, upgraded) as it happens. The HTTP API
// serves both: POST /v1/pools/{name}/{op} and GET /v1/events.
//
// # Batches
//
// RunBatch runs a generator's jobs to the end. Without a Client it needs
// nothing else running: it embeds a conductor and forks the program itself
// as its workers, as the seeds' demo did (examples/squares-batch).
package conductor
