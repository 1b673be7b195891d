package ctl

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/conductor-run/conductor/internal/version"
)

func (a *app) hostsCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "hosts",
		Short: "list every live host (its workerd, pools and workers), then those lost lately",
		Long: `List every live host as its last heartbeat describes it (GET /v1/hosts): workerd's
pid and how long it has run, its pools (name and worker count), its worker processes,
LEAVING for a workerd that is stopping, and LOST with how long ago a host lost (silent
for three heartbeats; listed for 15 minutes) was last heard. -o wide adds the heartbeat
interval and each pool's state; -o json prints the whole records (client.Host).`,
		Args: nargs(0, 0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.api.table(cmd.Context(), "/v1/hosts", columns{
				base: []column{col("host"), col("pid"), {key: "started", head: "UP", format: a.api.upCell},
					{key: "pools", format: hostPoolsCell(false)}, {key: "workers", format: countCell},
					{key: "leaving", format: leavingCell}, {key: "lost", format: a.api.lostCell}},
				wide: []column{{key: "interval", format: durationCell}, {key: "pools", head: "STATES", format: hostPoolsCell(true)}},
			})
		},
	}
}

// upCell is how long ago an RFC 3339 time was, without "ago".
func (c *client) upCell(v any) string {
	return strings.TrimSuffix(c.ageCell(v), " ago")
}

// countCell is the length of a JSON array.
func countCell(v any) string {
	a, _ := v.([]any)
	return fmt.Sprint(len(a))
}

// lostCell says how long ago a lost host was last heard; "-" for a live
// one.
func (c *client) lostCell(v any) string {
	if v == nil || v == "" {
		return "-"
	}
	return c.ageCell(v)
}

func leavingCell(v any) string {
	if b, _ := v.(bool); b {
		return "leaving"
	}
	return "-"
}

// hostPoolsCell formats a host's pools as name(count), or with states as
// name:state.
func hostPoolsCell(states bool) func(any) string {
	return func(v any) string {
		pools, _ := v.([]any)
		if len(pools) == 0 {
			return "-"
		}
		parts := make([]string, 0, len(pools))
		for _, p := range pools {
			m, _ := p.(map[string]any)
			if states {
				parts = append(parts, format(m["name"])+":"+format(m["state"]))
			} else {
				parts = append(parts, fmt.Sprintf("%s(%s)", format(m["name"]), format(m["count"])))
			}
		}
		return strings.Join(parts, ",")
	}
}

func (a *app) versionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "print conductorctl's build and, if it answers, conductord's",
		Args:  nargs(0, 0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.api.version(cmd.Context())
		},
	}
}

// version prints conductorctl's build, and conductord's from GET
// /v1/version. conductord not answering is not an error: its line says why.
func (c *client) version(ctx context.Context) error {
	own := version.Get()
	var server *version.Info
	raw, err := c.get(ctx, "/v1/version")
	if err == nil {
		var v version.Info
		if err = json.Unmarshal(raw, &v); err == nil {
			server = &v
		}
	}
	if c.json() {
		out := map[string]any{"conductorctl": own, "conductord": server}
		if err != nil {
			out["conductord_error"] = err.Error()
		}
		return encodeJSON(c.out, out, "  ")
	}
	tw := tabwriter.NewWriter(c.out, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "conductorctl\t%s\n", own)
	if server != nil {
		fmt.Fprintf(tw, "conductord\t%s\t(%s)\n", server, c.base)
	} else {
		fmt.Fprintf(tw, "conductord\tunknown: %v\n", err)
	}
	return tw.Flush()
}
