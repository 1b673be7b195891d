// Package worker is the SDK for job workers written in Go: programs that
// workerd starts, one process per slot of a pool, and feeds jobs one at a
// time.
//
// # A worker
//
// A worker is a Handler and a main function that calls Main:
//
//	func main() { worker.Main(square) }
//
//	func square(ctx context.Context, job *worker.Job) (any, error) {
//		var n float64
//		if err := job.Decode(&n); err != nil {
//			return nil, worker.Permanent(err) // retrying will not help
//		}
//		return n * n, nil
//	}
//
// and a pool that runs it:
//
//	workerd --pool 'name=squares,count=2,cmd=./bin/squares-worker'
//
// The handler's result is sent back as JSON and becomes the job's result. An
// error fails the attempt, and workerd retries the job with backoff; an
// error wrapped with Permanent fails the job for good. A panic fails the
// attempt and the worker goes on.
//
// # The channel
//
// workerd talks to the worker over two pipes, file descriptor 3 (to the
// worker) and 4 (from it), one JSON object per line; stdout and stderr are
// the program's own, and workerd collects them as its log. Run speaks this
// protocol, specified in docs/protocol.md:
//
//	worker  -> {"op":"ready"}
//	workerd -> {"op":"job","id":"j1","type":"squares","payload":7,"attempt":1}
//	worker  -> {"op":"done","id":"j1","result":49}
//	workerd -> {"op":"cancel","id":"j1"}   cancels the handler's context
//	workerd -> {"op":"shutdown"}           finish the job, then exit
//	worker  -> {"op":"busy"}               stopping on its own: send no job
//
// workerd also sets CONDUCTOR_PROTOCOL, CONDUCTOR_POOL,
// CONDUCTOR_WORKER_INDEX and CONDUCTOR_HOST, which IsWorker, Pool, Index and
// Host read.
//
// # Stopping
//
// A worker stops gracefully, finishing and reporting its running job, when
// workerd sends shutdown, on the first SIGTERM or SIGINT (Main), or when the
// context given to Run is done. A second signal (or the context given with
// WithHardStop) cancels the running handler's context. When workerd goes
// away, closing fd 3, the handler's context is cancelled and the worker
// exits with status 1; the job is redelivered elsewhere.
//
// # Testing a handler
//
// Run with WithChannel serves jobs over any reader and writer, so a test can
// play workerd over os.Pipe or io.Pipe (see the example of Run). A handler
// is also a plain function that a test can call with a Job.
package worker
