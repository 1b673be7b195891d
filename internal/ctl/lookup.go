package ctl

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"

	"github.com/spf13/cobra"
)

const lookupUse = "lookup get NAME KEY | set NAME KEY VALUE | del NAME KEY | ls NAME"

// lookupCmd is `conductorctl lookup get|set|del|ls` (docs/lookups.md).
func (a *app) lookupCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   lookupUse,
		Short: "read, set, delete or list a named lookup's keys (VALUE is JSON, or - for stdin)",
		Args:  nargs(0, -1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usageErrorf("unknown lookup command %q; usage: conductorctl %s", args[0], lookupUse)
			}
			return usageErrorf("usage: conductorctl %s", lookupUse)
		},
	}
	path := func(name, key string) string {
		return "/v1/lookups/" + url.PathEscape(name) + "/" + url.PathEscape(key)
	}
	sub := func(use, short string, n int, run func(ctx context.Context, args []string) error) *cobra.Command {
		return &cobra.Command{
			Use: use, Short: short,
			Args: func(cmd *cobra.Command, args []string) error {
				if len(args) != n {
					return usageErrorf("usage: conductorctl %s", lookupUse)
				}
				return nil
			},
			RunE: func(cmd *cobra.Command, args []string) error { return run(cmd.Context(), args) },
		}
	}
	cmd.AddCommand(
		sub("get NAME KEY", "print the value of KEY (JSON)", 2, func(ctx context.Context, args []string) error {
			return a.api.show(ctx, http.MethodGet, path(args[0], args[1]), nil, nil)
		}),
		sub("set NAME KEY VALUE", "set KEY to VALUE (JSON, or - for stdin)", 3, func(ctx context.Context, args []string) error {
			value, err := jsonArg(a.api.stdin, args[2], "value")
			if err != nil {
				return err
			}
			_, err = a.api.call(ctx, http.MethodPut, path(args[0], args[1]), value, http.Header{"Content-Type": {"application/json"}})
			return err
		}),
		sub("del NAME KEY", "delete KEY", 2, func(ctx context.Context, args []string) error {
			_, err := a.api.call(ctx, http.MethodDelete, path(args[0], args[1]), nil, nil)
			return err
		}),
		sub("ls NAME", "list the keys of lookup NAME, sorted (-o json: the API's answer)", 1, func(ctx context.Context, args []string) error {
			return a.api.lookupKeys(ctx, args[0])
		}),
	)
	return cmd
}

func (c *client) lookupKeys(ctx context.Context, name string) error {
	raw, err := c.get(ctx, "/v1/lookups/"+url.PathEscape(name))
	if err != nil {
		return err
	}
	if c.json() {
		return printJSON(c.out, raw)
	}
	var a struct{ Keys []string }
	if err := json.Unmarshal(raw, &a); err != nil {
		return fmt.Errorf("read the answer: %w", err)
	}
	slices.Sort(a.Keys)
	for _, k := range a.Keys {
		fmt.Fprintln(c.out, k)
	}
	return nil
}
