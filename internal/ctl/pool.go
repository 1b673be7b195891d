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
	"slices"
	"strconv"
	"text/tabwriter"
	"time"
)

// poolUsage is the usage line of each pool command.
var poolUsage = map[string]string{
	"drain":    "drain POOL [--timeout D] [--host ID]",
	"resume":   "resume POOL [--host ID]",
	"recycle":  "recycle POOL [--host ID]",
	"restart":  "restart POOL [--timeout D] [--host ID]",
	"resize":   "resize POOL N [--host ID]",
	"upgrade":  "upgrade POOL [--health D] [--host ID] -- CMD [ARG...]  (or CMD as one string)",
	"shutdown": "shutdown POOL [--timeout D] [--host ID]",
}

// commandAnswer is conductord's answer to a pool command.
type commandAnswer struct {
	Hosts []struct {
		Host  string `json:"host"`
		OK    bool   `json:"ok"`
		Error string `json:"error"`
	} `json:"hosts"`
	Error string `json:"error"`
}

// poolCommand sends pool command op and prints each host's answer.
func (c *client) poolCommand(ctx context.Context, op string, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet(op, flag.ContinueOnError)
	fs.SetOutput(stderr)
	host := fs.String("host", "", "send the command to this host only")
	var timeout, health time.Duration
	switch op {
	case "drain", "restart", "shutdown":
		fs.DurationVar(&timeout, "timeout", 0, "how long in-flight jobs get to finish (default: the pool's stop_timeout)")
	case "upgrade":
		fs.DurationVar(&health, "health", 0, "how long the first new worker must stay up (default: the host's)")
	}
	pos, argv, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	body, err := commandBody(op, pos, argv, timeout, health)
	if err != nil {
		return err
	}
	path := "/v1/pools/" + url.PathEscape(pos[0]) + "/" + op
	if *host != "" {
		path += "?host=" + url.QueryEscape(*host)
	}
	resp, raw, err := c.send(ctx, http.MethodPost, path, body, nil)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusAccepted && resp.StatusCode != http.StatusBadGateway {
		return apiError(http.MethodPost, path, resp, raw)
	}
	var ans commandAnswer
	if err := json.Unmarshal(raw, &ans); err != nil {
		return fmt.Errorf("decode answer of %s: %w", path, err)
	}
	return c.printAnswer(op, pos[0], ans)
}

// printAnswer prints each host's answer and fails if any did not accept.
func (c *client) printAnswer(op, pool string, ans commandAnswer) error {
	tw := tabwriter.NewWriter(c.out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "HOST\tRESULT")
	refused := 0
	for _, h := range ans.Hosts {
		result := "accepted"
		if !h.OK {
			result = "refused: " + h.Error
			refused++
		}
		fmt.Fprintf(tw, "%s\t%s\n", h.Host, result)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	switch {
	case ans.Error != "":
		return &ExitError{Code: 4, Msg: ans.Error}
	case refused > 0:
		return &ExitError{Code: 4, Msg: fmt.Sprintf("%s of pool %s: %d of %d hosts refused", op, pool, refused, len(ans.Hosts))}
	}
	return nil
}

// commandBody checks the arguments of pool command op and returns its
// body: nil when it has no fields.
func commandBody(op string, pos, argv []string, timeout, health time.Duration) ([]byte, error) {
	usage := errors.New("usage: conductorctl " + poolUsage[op])
	fields := map[string]any{}
	switch {
	case len(pos) == 0:
		return nil, usage
	case op == "resize":
		if len(pos) != 2 || len(argv) > 0 {
			return nil, usage
		}
		n, err := strconv.Atoi(pos[1])
		if err != nil || n < 0 {
			return nil, fmt.Errorf("resize: N must be a number of workers, 0 or more, not %q", pos[1])
		}
		fields["count"] = n
	case op == "upgrade":
		cmd, err := upgradeCommand(pos[1:], argv)
		if err != nil {
			return nil, fmt.Errorf("%w; %w", err, usage)
		}
		fields["cmd"] = cmd
	case len(pos) != 1 || len(argv) > 0:
		return nil, usage
	}
	if timeout != 0 {
		fields["timeout"] = timeout.String()
	}
	if health != 0 {
		fields["health"] = health.String()
	}
	if len(fields) == 0 {
		return nil, nil
	}
	return json.Marshal(fields)
}

// upgradeCommand is the "cmd" of an upgrade: the words after "--", or one
// string (after "--" or not) that conductord splits like a shell.
func upgradeCommand(words, argv []string) (any, error) {
	switch {
	case len(words) > 0 && len(argv) > 0, len(words) > 1:
		return nil, errors.New("upgrade: give CMD either after -- or as one string")
	case len(words) == 1:
		return words[0], nil
	case len(argv) == 1:
		return argv[0], nil
	case len(argv) > 1:
		return argv, nil
	}
	return nil, errors.New("upgrade: no command line")
}

// parseArgs parses fs's flags wherever they are among the positional
// arguments before a "--", and returns those positional arguments, and the
// arguments after "--" as they are.
func parseArgs(fs *flag.FlagSet, args []string) (pos, argv []string, err error) {
	if i := slices.Index(args, "--"); i >= 0 {
		args, argv = args[:i], args[i+1:]
	}
	for {
		if err := fs.Parse(args); err != nil {
			return nil, nil, err
		}
		if fs.NArg() == 0 {
			return pos, argv, nil
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}
