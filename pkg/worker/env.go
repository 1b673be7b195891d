package worker

import (
	"fmt"
	"os"
	"strconv"

	"github.com/conductor-run/conductor/internal/names"
)

// IsWorker reports whether the program was started by workerd as a job
// worker (CONDUCTOR_PROTOCOL=channel). A program that is both a worker and
// something else, such as the batch demo forking itself, branches on it.
func IsWorker() bool { return os.Getenv(names.EnvProtocol) == "channel" }

// Index returns the process's slot in its pool, from 0 to the pool's count
// minus one (CONDUCTOR_WORKER_INDEX). A replacement process takes the slot
// of the one it replaces. Index returns -1 when the variable is absent or not
// a number.
func Index() int {
	i, err := strconv.Atoi(os.Getenv(names.EnvWorkerIndex))
	if err != nil || i < 0 {
		return -1
	}
	return i
}

// Pool returns the name of the process's pool (CONDUCTOR_POOL), or "".
func Pool() string { return os.Getenv(names.EnvPool) }

// Host returns the id of the host whose workerd started the process
// (CONDUCTOR_HOST), or "".
func Host() string { return os.Getenv(names.EnvHost) }

// prefetchFromEnv is the prefetch CONDUCTOR_PREFETCH asks for, or
// DefaultPrefetch when it is unset.
func prefetchFromEnv() (int, error) {
	v, ok := os.LookupEnv(names.EnvPrefetch)
	if !ok || v == "" {
		return DefaultPrefetch, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("worker: %s=%q: want a whole number, 0 or more", names.EnvPrefetch, v)
	}
	return n, nil
}
