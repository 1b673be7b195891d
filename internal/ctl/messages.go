package ctl

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
)

// jsonArg is a JSON value given on the command line, what it is for
// the error: the argument, or "-" to read it from stdin (at most 1 MiB).
func jsonArg(arg, what string) ([]byte, error) {
	b := []byte(arg)
	if arg == "-" {
		var err error
		if b, err = io.ReadAll(io.LimitReader(os.Stdin, 1<<20+1)); err != nil {
			return nil, fmt.Errorf("read the %s from stdin: %w", what, err)
		}
	}
	if !json.Valid(b) {
		return nil, fmt.Errorf("the %s is not JSON (a string is quoted: '\"text\"'): %.80q", what, b)
	}
	return b, nil
}

// sendMessage runs `conductorctl send HOST POOL INDEX MESSAGE` (docs/messages.md).
func (c *client) sendMessage(ctx context.Context, args []string) error {
	const use = "usage: conductorctl send HOST POOL INDEX MESSAGE (JSON, or - for stdin)"
	if len(args) != 4 {
		return errors.New(use)
	}
	body, err := jsonArg(args[3], "message")
	if err != nil {
		return err
	}
	path := "/v1/workers/" + url.PathEscape(args[0]) + "/" + url.PathEscape(args[1]) + "/" + url.PathEscape(args[2]) + "/message"
	return c.show(ctx, http.MethodPost, path, body, http.Header{"Content-Type": {"application/json"}})
}

// broadcast runs `conductorctl broadcast [--host H] POOL MESSAGE`.
func (c *client) broadcast(ctx context.Context, args []string, stderr io.Writer) error {
	const use = "usage: conductorctl broadcast [--host HOST] POOL|'*' MESSAGE (JSON, or - for stdin)"
	fs := flag.NewFlagSet("broadcast", flag.ContinueOnError)
	fs.SetOutput(stderr)
	host := fs.String("host", "", "only this host's workers")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 2 {
		return errors.New(use)
	}
	body, err := jsonArg(fs.Arg(1), "message")
	if err != nil {
		return err
	}
	path := "/v1/pools/" + url.PathEscape(fs.Arg(0)) + "/broadcast"
	if *host != "" {
		path += "?host=" + url.QueryEscape(*host)
	}
	return c.show(ctx, http.MethodPost, path, body, http.Header{"Content-Type": {"application/json"}})
}
