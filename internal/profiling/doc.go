// Package profiling serves net/http/pprof on $CONDUCTOR_PPROF_<BINARY> (for example
// CONDUCTOR_PPROF_WORKERD=127.0.0.1:6062) when the
// binaries are built with -tags pprof; plain builds carry none of it.
package profiling
