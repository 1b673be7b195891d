package ctl

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
)

// poolOps are the pool commands, in the order help lists them.
var poolOps = []string{"drain", "resume", "recycle", "restart", "resize", "upgrade", "shutdown"}

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

// poolShort is what each pool command does, for help.
var poolShort = map[string]string{
	"drain":    "finish in-flight jobs, then stop the workers",
	"resume":   "start a drained pool's workers again",
	"recycle":  "replace every worker, one at a time",
	"restart":  "stop every worker, then start them all again",
	"resize":   "run N workers",
	"upgrade":  "replace every worker with one running CMD, rolled back if the first does not stay up for D",
	"shutdown": "stop the pool for good (D: time for in-flight jobs)",
}

const poolLong = `Pool commands go to every host that runs the pool (POOL '*': every pool, but for
resize and upgrade), or only to --host; each host's answer is printed (-o json: the
API's answer), and the exit code is 4 if any host refused or did not answer.`

// poolCommandCmd is pool command op.
func (a *app) poolCommandCmd(op string) *cobra.Command {
	var host string
	var timeout, health time.Duration
	cmd := &cobra.Command{
		Use:   poolUsage[op],
		Short: poolShort[op],
		Long:  poolShort[op] + ".\n\n" + poolLong,
		RunE: func(cmd *cobra.Command, args []string) error {
			pos, argv := args, []string(nil)
			if at := cmd.ArgsLenAtDash(); at >= 0 {
				pos, argv = args[:at], args[at:]
			}
			body, err := commandBody(op, pos, argv, timeout, health)
			if err != nil {
				return &UsageError{Err: err}
			}
			return a.api.poolCommand(cmd.Context(), op, pos[0], host, body)
		},
	}
	if op == "upgrade" {
		cmd.Example = `  conductorctl upgrade squares -- ./bin/squares-worker --v2
  conductorctl upgrade squares --health 10s './bin/squares-worker --v2'`
	}
	f := cmd.Flags()
	f.StringVar(&host, "host", "", "send the command to this host only")
	switch op {
	case "drain", "restart", "shutdown":
		f.DurationVar(&timeout, "timeout", 0, "how long in-flight jobs get to finish (default: the pool's stop_timeout)")
	case "upgrade":
		f.DurationVar(&health, "health", 0, "how long the first new worker must stay up (default: the host's)")
	}
	return cmd
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
func (c *client) poolCommand(ctx context.Context, op, pool, host string, body []byte) error {
	path := "/v1/pools/" + url.PathEscape(pool) + "/" + op
	if host != "" {
		path += "?host=" + url.QueryEscape(host)
	}
	resp, raw, err := c.send(ctx, http.MethodPost, path, body, nil)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusAccepted && resp.StatusCode != http.StatusBadGateway {
		return c.apiError(http.MethodPost, path, resp, raw)
	}
	var ans commandAnswer
	if err := json.Unmarshal(raw, &ans); err != nil {
		return fmt.Errorf("decode answer of %s: %w", path, err)
	}
	if c.json() {
		if err := printJSON(c.out, raw); err != nil {
			return err
		}
	}
	return c.printAnswer(op, pool, ans)
}

// printAnswer prints each host's answer and fails if any did not accept.
func (c *client) printAnswer(op, pool string, ans commandAnswer) error {
	out := c.out
	if c.json() {
		out = io.Discard
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
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
		return &ExitError{Code: ExitRefused, Msg: ans.Error}
	case refused > 0:
		return &ExitError{Code: ExitRefused, Msg: fmt.Sprintf("%s of pool %s: %d of %d hosts refused", op, pool, refused, len(ans.Hosts))}
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
