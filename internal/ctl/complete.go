package ctl

import (
	"context"
	"encoding/json"
	"slices"
	"time"

	"github.com/spf13/cobra"
)

// completeTimeout bounds the API call a completion makes: a shell waits
// for it at every TAB.
const completeTimeout = 2 * time.Second

// poolArgCommands are the commands whose first argument is a pool (or job
// type): their completion asks conductord for the pools it knows.
var poolArgCommands = []string{"logs", "dead", "submit", "broadcast", "drain", "resume", "recycle", "restart", "resize", "upgrade", "shutdown"}

// hostFlagCommands are the commands with --host ID: it completes the live
// hosts.
var hostFlagCommands = []string{"logs", "broadcast", "drain", "resume", "recycle", "restart", "resize", "upgrade", "shutdown"}

// addCompletions makes the pool arguments and --host flags of root's
// commands complete from conductord (GET /v1/pools, GET /v1/hosts), where
// they offered file names.
func (a *app) addCompletions(root *cobra.Command) {
	for _, c := range root.Commands() {
		if slices.Contains(poolArgCommands, c.Name()) {
			c.ValidArgsFunction = func(cmd *cobra.Command, args []string, _ string) ([]cobra.Completion, cobra.ShellCompDirective) {
				if len(args) > 0 {
					return nil, cobra.ShellCompDirectiveNoFileComp
				}
				return a.completeNames(cmd, "/v1/pools", "type"), cobra.ShellCompDirectiveNoFileComp
			}
		}
		if slices.Contains(hostFlagCommands, c.Name()) {
			_ = c.RegisterFlagCompletionFunc("host", func(cmd *cobra.Command, _ []string, _ string) ([]cobra.Completion, cobra.ShellCompDirective) {
				return a.completeNames(cmd, "/v1/hosts", "host"), cobra.ShellCompDirectiveNoFileComp
			})
		}
	}
}

// completeNames returns the field key of each object of the list at path;
// nothing if conductord cannot be asked (the shell then offers nothing,
// rather than file names).
func (a *app) completeNames(cmd *cobra.Command, path, key string) []cobra.Completion {
	if a.api == nil {
		if err := a.setup(); err != nil {
			cobra.CompDebugln("completion: "+err.Error(), false)
			return nil
		}
	}
	ctx, cancel := context.WithTimeout(cmd.Context(), completeTimeout)
	defer cancel()
	raw, err := a.api.get(ctx, path)
	if err != nil {
		cobra.CompDebugln("completion: "+err.Error(), false)
		return nil
	}
	var list []map[string]any
	if json.Unmarshal(raw, &list) != nil {
		return nil
	}
	var names []cobra.Completion
	for _, o := range list {
		if s, ok := o[key].(string); ok && s != "" && !slices.Contains(names, s) {
			names = append(names, s)
		}
	}
	return names
}
