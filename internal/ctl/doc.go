// Package ctl implements conductorctl: each command is one call (or a few)
// to the conductor's HTTP API, printed for a person (tables, sizes and
// ages made readable) or for a script (-o json: the API's JSON, indented).
//
// The commands are github.com/spf13/cobra commands, one file per concern:
// root.go (the root command, global flags, exit codes), api.go (the HTTP
// calls and their errors), output.go (tables, JSON, humanised values), and
// a file per group of commands. main calls Main; tests call Run.
//
// A tour, for a newcomer:
//
//   - root.go: Main (exit codes, usage errors on stderr) and Run; the
//     root command, its global flags (--server, --token, -o, --log-*) and
//     setup, which builds the API client before a command runs.
//   - api.go: the client: calls, the unreachable, 401 and 403 errors.
//   - output.go: -o, tables of JSON objects (columns and wide columns),
//     JSON indented and stable, sizes, durations and ages for people.
//   - jobs.go (submit, job, jobs, dead, retry, cancel, abort),
//     submitfile.go and progress.go (submit -f), pool.go (the pool
//     commands), pools.go (pools, workers, stats, health), hosts.go
//     (hosts, version), logs.go, top.go, events.go, lookup.go,
//     messages.go (send, broadcast), health.go.
//
// docs/cli.md is the user's side of all this.
package ctl
