package ctl

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"

	"github.com/spf13/cobra"
)

// jsonArg is a JSON value given on the command line, what it is for
// the error: the argument, or "-" to read it from stdin (at most 1 MiB).
func jsonArg(stdin io.Reader, arg, what string) ([]byte, error) {
	b := []byte(arg)
	if arg == "-" {
		var err error
		if b, err = io.ReadAll(io.LimitReader(stdin, 1<<20+1)); err != nil {
			return nil, fmt.Errorf("read the %s from stdin: %w", what, err)
		}
	}
	if !json.Valid(b) {
		return nil, fmt.Errorf("the %s is not JSON (a string is quoted: '\"text\"'): %.80q", what, b)
	}
	return b, nil
}

// sendCmd is `conductorctl send HOST POOL INDEX MESSAGE` (docs/messages.md).
func (a *app) sendCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "send HOST POOL INDEX MESSAGE",
		Short: "send a message (JSON, - for stdin) to one worker",
		Args:  nargs(4, 4),
		RunE: func(cmd *cobra.Command, args []string) error {
			body, err := jsonArg(a.api.stdin, args[3], "message")
			if err != nil {
				return err
			}
			path := "/v1/workers/" + url.PathEscape(args[0]) + "/" + url.PathEscape(args[1]) + "/" + url.PathEscape(args[2]) + "/message"
			return a.api.show(cmd.Context(), http.MethodPost, path, body, http.Header{"Content-Type": {"application/json"}})
		},
	}
}

// broadcastCmd is `conductorctl broadcast [--host H] POOL MESSAGE`.
func (a *app) broadcastCmd() *cobra.Command {
	var host string
	cmd := &cobra.Command{
		Use:   "broadcast [--host ID] POOL MESSAGE",
		Short: "send a message (JSON, - for stdin) to every worker of POOL ('*': of all)",
		Args:  nargs(2, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			body, err := jsonArg(a.api.stdin, args[1], "message")
			if err != nil {
				return err
			}
			path := "/v1/pools/" + url.PathEscape(args[0]) + "/broadcast"
			if host != "" {
				path += "?host=" + url.QueryEscape(host)
			}
			return a.api.show(cmd.Context(), http.MethodPost, path, body, http.Header{"Content-Type": {"application/json"}})
		},
	}
	cmd.Flags().StringVar(&host, "host", "", "only this host's workers")
	return cmd
}
