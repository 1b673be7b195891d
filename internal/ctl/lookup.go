package ctl

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
)

// lookup runs `conductorctl lookup get|set|del|ls` (docs/lookups.md).
func (c *client) lookup(ctx context.Context, args []string) error {
	const use = "usage: conductorctl lookup get NAME KEY | set NAME KEY VALUE | del NAME KEY | ls NAME"
	if len(args) == 0 {
		return errors.New(use)
	}
	op, args := args[0], args[1:]
	path := func(name, key string) string {
		return "/v1/lookups/" + url.PathEscape(name) + "/" + url.PathEscape(key)
	}
	switch {
	case op == "get" && len(args) == 2:
		return c.show(ctx, http.MethodGet, path(args[0], args[1]), nil, nil)
	case op == "set" && len(args) == 3:
		value, err := jsonArg(args[2], "value")
		if err != nil {
			return err
		}
		_, err = c.call(ctx, http.MethodPut, path(args[0], args[1]), value, http.Header{"Content-Type": {"application/json"}})
		return err
	case op == "del" && len(args) == 2:
		_, err := c.call(ctx, http.MethodDelete, path(args[0], args[1]), nil, nil)
		return err
	case op == "ls" && len(args) == 1:
		raw, err := c.call(ctx, http.MethodGet, "/v1/lookups/"+url.PathEscape(args[0]), nil, nil)
		if err != nil {
			return err
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
	return errors.New(use)
}
