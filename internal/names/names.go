// Package names declares every name that conductor's processes pass one
// another outside a JSON body: the headers of NATS messages and HTTP
// requests, and the environment variables. Each is declared here once;
// docs/protocol.md and docs/api.md document them for other languages.
// Subjects, streams and buckets are named in internal/subject.
package names

// Headers of a job message on the job stream (see internal/wire.Options
// for the job's own options among them).
const (
	// HeaderJobID carries the job id. A job published without it takes the
	// Nats-Msg-Id header as its id, or else "seq-N" with N its stream sequence.
	HeaderJobID = "Conductor-Job-Id"
	// HeaderBatch carries the id of the batch the job belongs to, if any.
	HeaderBatch = "Conductor-Batch"
	// HeaderSubmitter names the credential a job was submitted on behalf
	// of (conductord sets it): that credential may read the job.
	HeaderSubmitter = "Conductor-Submitter"
	// HeaderTimeout carries a job's own timeout per attempt, a Go duration
	// ("30s"), instead of its pool's job_timeout.
	HeaderTimeout = "Conductor-Timeout"
	// HeaderMaxAttempts carries a job's own attempt limit (a whole number,
	// 1 or more), instead of its pool's max_attempts.
	HeaderMaxAttempts = "Conductor-Max-Attempts"
	// HeaderNotBefore holds the time (RFC 3339) before which the job must
	// not run: a delayed job.
	HeaderNotBefore = "Conductor-Not-Before"
	// HeaderRequeued marks a dead job queued again: its attempts count from
	// 1 again, and the history of its earlier run is kept.
	HeaderRequeued = "Conductor-Requeued"
	// HeaderStateRev carries the revision of the job's state that the
	// submitter stored before it published the job: workerd's first write
	// of the state expects it, so that it never replaces a later one
	// (docs/reliability.md, "Fencing"). Absent: the job has no state yet.
	HeaderStateRev = "Conductor-State-Rev"
	// HeaderMsgID is the JetStream deduplication header.
	HeaderMsgID = "Nats-Msg-Id"
	// HeaderPayloadObject names the object of the payload bucket
	// (subject.Space.PayloadBucket) that holds a job's payload when it is
	// passed by reference: the message's data is then empty, and
	// HeaderPayloadSize and HeaderPayloadDigest say what workerd must read
	// (docs/protocol.md, "Large payloads").
	HeaderPayloadObject = "Conductor-Payload-Object"
	// HeaderPayloadSize is the size in bytes of a payload passed by
	// reference.
	HeaderPayloadSize = "Conductor-Payload-Size"
	// HeaderPayloadDigest is the SHA-256 digest of a payload passed by
	// reference, as the object store writes it ("SHA-256=" and the
	// digest in URL-safe base64).
	HeaderPayloadDigest = "Conductor-Payload-Digest"
)

// Headers of a submission by NATS request (conductor.<ns>.submit.<type>)
// and of its reply; HeaderTimeout and HeaderMaxAttempts above apply too.
const (
	// HeaderPriority carries a job's priority (high, normal or low); a job
	// on the job stream has it in its subject instead.
	HeaderPriority = "Conductor-Priority"
	// HeaderDelay carries how long the job waits before it runs, a Go
	// duration ("10m").
	HeaderDelay = "Conductor-Delay"
	// HeaderWait asks the reply to wait for the job's end, a Go duration.
	HeaderWait = "Conductor-Wait"
	// HeaderIdempotencyKey makes repeated submissions one job; the HTTP
	// API takes the same header.
	HeaderIdempotencyKey = "Idempotency-Key"
	// HeaderHost, HeaderPool and HeaderWorker name the worker whose
	// request (the channel's request op) workerd sends.
	HeaderHost   = "Conductor-Host"
	HeaderPool   = "Conductor-Pool"
	HeaderWorker = "Conductor-Worker"
	// HeaderStatus is the reply's status, as HTTP's: 200, 202, 400, 413, 503.
	HeaderStatus = "Conductor-Status"
)

// Headers of a worker's output line published on the logs subject.
const (
	// HeaderLogSeq numbers the line in its pool's ring on its host:
	// "<epoch>.<seq>" (wire.LogTail), so that a reader who asked for the
	// ring's tail drops the live lines the tail already gave.
	HeaderLogSeq = "Conductor-Log-Seq"
)

// Headers that the NATS server sets on its own status messages (a pull
// request's end, a store's failure).
const (
	HeaderNATSStatus = "Status"
	// HeaderTTL gives one message of a stream that allows it a time to
	// live (a Go duration), past which the server removes it.
	HeaderTTL = "Nats-TTL"
	// HeaderExpectedLastSubjectSeq makes a write to a key conditional on
	// the key's revision (its subject's last sequence; 0: none).
	HeaderExpectedLastSubjectSeq = "Nats-Expected-Last-Subject-Sequence"
	HeaderNATSDescription        = "Description"
)

// Environment variables workerd sets for every worker process, after its
// own environment and the pool's env.
const (
	EnvProtocol    = "CONDUCTOR_PROTOCOL"     // the pool's protocol: channel or none
	EnvPool        = "CONDUCTOR_POOL"         // the pool's name
	EnvWorkerIndex = "CONDUCTOR_WORKER_INDEX" // the slot index, 0 to count-1
	EnvHost        = "CONDUCTOR_HOST"         // the host id
	EnvListenFD    = "CONDUCTOR_LISTEN_FD"    // the fd of the pool's listen socket, if any
	// The systemd socket-activation names, for a none pool's listen socket.
	EnvListenFDs     = "LISTEN_FDS"
	EnvListenPID     = "LISTEN_PID"
	EnvListenFDNames = "LISTEN_FDNAMES"
)

// Environment variables conductor's programs read.
const (
	// EnvPrefetch, set by the operator (a pool's env=), overrides the Go
	// SDK's default prefetch.
	EnvPrefetch = "CONDUCTOR_PREFETCH"
	// EnvToken is the token of conductord, workerd and conductorctl when
	// their --token flag is not given.
	EnvToken = "CONDUCTOR_TOKEN"
	// EnvTLSCA is conductorctl's --tls-ca when not given.
	EnvTLSCA = "CONDUCTOR_TLS_CA"
	// EnvServer is conductorctl's --server default.
	EnvServer = "CONDUCTOR_SERVER"
	// EnvPprofPrefix, followed by a binary's name in capitals
	// (CONDUCTOR_PPROF_WORKERD), is the address of its pprof server in
	// builds with -tags pprof.
	EnvPprofPrefix = "CONDUCTOR_PPROF_"
	// EnvTestNATSLog switches on the embedded servers' logs in tests.
	EnvTestNATSLog = "CONDUCTOR_TEST_NATS_LOG"
)

// MetaFinalTTL is the key, in the metadata of the state bucket's stream,
// of how long a final job state stays in the bucket once written (a Go
// duration): conductord archives it meanwhile, and sets it. Absent: final
// states stay for the bucket's TTL.
const MetaFinalTTL = "conductor.final_ttl"
