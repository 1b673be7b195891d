package ctl

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
)

func (a *app) poolsCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "pools",
		Short: "list job types with their counts and state",
		Long: `List every job type with its jobs now (queued, held, running), the attempts ended
since the counters were created (succeeded, failed, dead), its workers, and its state
summed up over the hosts, with the reason when it is not plainly running (GET /v1/pools).
-o wide adds the state of each host.`,
		Args: nargs(0, 0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.api.table(cmd.Context(), "/v1/pools", columns{
				base: []column{col("type"), col("queued"), col("held"), col("running"), col("succeeded"), col("failed"),
					col("dead"), col("workers"), col("state"), col("reason")},
				wide: []column{col("superseded"), {key: "hosts", format: poolHostsCell}},
			})
		},
	}
}

// poolHostsCell is the hosts of a pool, as host:state(count).
func poolHostsCell(v any) string {
	hosts, _ := v.([]any)
	if len(hosts) == 0 {
		return "-"
	}
	parts := make([]string, 0, len(hosts))
	for _, h := range hosts {
		m, _ := h.(map[string]any)
		parts = append(parts, fmt.Sprintf("%s:%s(%s)", format(m["host"]), format(m["state"]), format(m["count"])))
	}
	return strings.Join(parts, ",")
}

func (a *app) workersCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "workers",
		Short: "list every worker process on every host",
		Long: `List every worker process (or the slot of one waiting to restart) on every live host
(GET /v1/workers). RSS is shown in KiB, MiB or GiB (-o json: bytes). -o wide adds how
long ago the process started, its CPU time, its command line version, the jobs queued
in it, and how its previous process ended.`,
		Args: nargs(0, 0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.api.table(cmd.Context(), "/v1/workers", columns{
				base: []column{col("host"), col("pool"), col("index"), col("pid"), col("state"),
					{key: "rss", format: sizeCell}, col("jobs_done"), col("restarts"), col("job"), col("reason")},
				wide: []column{{key: "started", format: a.api.ageCell}, {key: "cpu", format: durationCell},
					col("version"), col("queued"), col("last_exit"), {key: "last_exit_at", format: a.api.ageCell}},
			})
		},
	}
}

func (a *app) statsCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "stats",
		Short: "show the last roll-up of the workers' counters",
		Long: `Show the last roll-up of the workers' counters (GET /v1/stats, docs/stats.md): each
counter summed over the workers, its last value and its change over the last interval.
-o wide adds a row per worker; -o json prints the whole roll-up.`,
		Args: nargs(0, 0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			raw, err := a.api.get(cmd.Context(), "/v1/stats")
			if err != nil {
				return err
			}
			if a.api.json() {
				return printJSON(a.api.out, raw)
			}
			return a.api.printStats(raw)
		},
	}
}

// statsAnswer is what GET /v1/stats answers.
type statsAnswer struct {
	At  string `json:"at"`
	Raw []struct {
		Host  string             `json:"host"`
		Pool  string             `json:"pool"`
		Index int                `json:"index"`
		Last  map[string]float64 `json:"last"`
		Diff  map[string]float64 `json:"diff"`
	} `json:"raw"`
	Agg struct {
		Last map[string]float64 `json:"last"`
		Diff map[string]float64 `json:"diff"`
	} `json:"agg"`
	AvgTimeSpan float64 `json:"avg_time_span"`
}

func (c *client) printStats(raw []byte) error {
	var s statsAnswer
	if err := json.Unmarshal(raw, &s); err != nil {
		return fmt.Errorf("decode /v1/stats: %w", err)
	}
	tw := tabwriter.NewWriter(c.out, 0, 4, 2, ' ', 0)
	if c.wide() {
		fmt.Fprintln(tw, "HOST\tPOOL\tINDEX\tCOUNTER\tLAST\tDIFF")
		for _, r := range s.Raw {
			for _, k := range sortedKeys(r.Last) {
				fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%g\t%g\n", r.Host, r.Pool, r.Index, k, r.Last[k], r.Diff[k])
			}
		}
	} else {
		fmt.Fprintln(tw, "COUNTER\tLAST\tDIFF")
		for _, k := range sortedKeys(s.Agg.Last) {
			fmt.Fprintf(tw, "%s\t%g\t%g\n", k, s.Agg.Last[k], s.Agg.Diff[k])
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintf(c.out, "at %s (%s), over %.1fs on average\n", s.At, c.ageCell(s.At), s.AvgTimeSpan)
	return err
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func (a *app) healthCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "health",
		Short: "show whether conductord can queue jobs, and its storage (exit 5 if not healthy)",
		Args:  nargs(0, 0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.api.health(cmd.Context())
		},
	}
}
