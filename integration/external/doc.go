// Package external checks conductor's public packages from outside the
// conductor module, as a user's program sees them: this directory is a
// module of its own, which requires conductor and reaches it through a
// replace directive, so it can import pkg/... but not internal/..., and it
// uses nothing but their exported API.
//
// Its tests run a broker.Pool and read its events, Info and Workers; run a
// host with workerd.Run against an in-process conductor and submit jobs with
// a client.Client; and check, with the go tool, that pkg/client links
// neither the NATS server nor the broker and that no exported declaration
// of the public packages names an internal type. The test binary plays the
// worker (see TestMain).
//
// Run them with `make test`; `go test ./...` in conductor's root does not
// reach them, since the nested go.mod makes this directory another module.
package external
