package conductor_test

import (
	"testing"
)

// TestReview17a_HostLogsItsTypesOnly: a host credential publishes the
// output of the pools of its types only. One of type squares could
// publish lines into the logs of pool other (a pool is named by its job
// type), where an operator following other's logs would read them as
// that pool's.
func TestReview17a_HostLogsItsTypesOnly(t *testing.T) {
	t.Parallel()
	rc := startRoleCluster(t)
	unseenPub(t, rc, "h1", "conductor.default.logs.h1.other")
	unseenPub(t, rc, "h2", "conductor.default.logs.h2.squares")
}
