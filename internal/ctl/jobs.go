package ctl

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/google/uuid"
	"github.com/spf13/cobra"

	"github.com/conductor-run/conductor/internal/names"
)

// jobColumns are the columns of jobs and dead. UPDATED_AT stays an exact
// time in every format: it is the cursor of the next page (--before).
func (c *client) jobColumns(status bool) columns {
	base := []column{col("id"), col("type")}
	if status {
		base = append(base, col("status"))
	}
	base = append(base, col("attempts"), col("updated_at"), col("error"))
	return columns{base: base, wide: []column{
		col("priority"), col("batch"),
		{key: "updated_at", head: "AGE", format: c.ageCell},
		{key: "created_at", head: "CREATED", format: c.ageCell},
	}}
}

func (a *app) jobsCmd() *cobra.Command {
	var status, typ, limit, before string
	cmd := &cobra.Command{
		Use:   "jobs [--status S[,S]] [--type T] [--limit N] [--before TIME]",
		Short: "list jobs, last updated first (at most 100 unless --limit)",
		Long: `List jobs, the most recently updated first (GET /v1/jobs). Every status unless
--status; at most 100 unless --limit. For the next page, pass the last UPDATED_AT
as --before. The error column is cut to 60 characters: job ID shows it whole.`,
		Args: nargs(0, 0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkJobsQuery(status, limit, before); err != nil {
				return err
			}
			q := url.Values{}
			for k, v := range map[string]string{"status": status, "type": typ, "limit": limit, "before": before} {
				if v != "" {
					q.Set(k, v)
				}
			}
			path := "/v1/jobs"
			if len(q) > 0 {
				path += "?" + q.Encode()
			}
			return a.api.table(cmd.Context(), path, a.api.jobColumns(true))
		},
	}
	f := cmd.Flags()
	f.StringVar(&status, "status", "", "only jobs in this status, or in any of a comma list (queued,held,running,succeeded,failed,dead,cancelled)")
	f.StringVar(&typ, "type", "", "only jobs of this type")
	f.StringVar(&limit, "limit", "", "at most N jobs, 1 to 1000 (default 100)")
	f.StringVar(&before, "before", "", "only jobs updated before this time: the UPDATED_AT of the last job listed, for the next page")
	_ = cmd.RegisterFlagCompletionFunc("status", cobra.FixedCompletions(jobStatuses, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

// jobStatuses are the statuses jobs --status takes.
var jobStatuses = []string{"queued", "held", "running", "succeeded", "failed", "dead", "cancelled"}

// maxJobsLimit is the most jobs GET /v1/jobs lists at once.
const maxJobsLimit = 1000

// checkJobsQuery checks jobs' flags before anything is sent: a bad value
// is a usage error (exit 2), not conductord's 400.
func checkJobsQuery(status, limit, before string) error {
	if status != "" {
		for _, s := range strings.Split(status, ",") {
			if !slices.Contains(jobStatuses, s) {
				return usageErrorf("--status: unknown status %q: want queued, held, running, succeeded, failed, dead or cancelled (a comma list)", s)
			}
		}
	}
	if limit != "" {
		if n, err := strconv.Atoi(limit); err != nil || n < 1 || n > maxJobsLimit {
			return usageErrorf("--limit: want 1 to %d jobs, not %q", maxJobsLimit, limit)
		}
	}
	if before != "" {
		if _, err := time.Parse(time.RFC3339Nano, before); err != nil {
			return usageErrorf("--before: want an RFC 3339 time (the UPDATED_AT of the last job listed), not %q", before)
		}
	}
	return nil
}

func (a *app) deadCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "dead [TYPE]",
		Short: "list dead jobs, last updated first (at most 100)",
		Args:  nargs(0, 1),
		RunE: func(cmd *cobra.Command, args []string) error {
			path := "/v1/jobs?status=dead"
			if len(args) == 1 {
				path += "&type=" + url.QueryEscape(args[0])
			}
			return a.api.table(cmd.Context(), path, a.api.jobColumns(false))
		},
	}
}

func (a *app) jobCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "job ID",
		Short: "show a job's state",
		Long: `Show a job's state (GET /v1/jobs/{id}): as JSON, indented, as it always has
(scripts read it); -o table or -o wide prints it one field a line, times with their
age, then its attempts as a table.`,
		Args: nargs(1, 1),
		RunE: func(cmd *cobra.Command, args []string) error {
			path := "/v1/jobs/" + url.PathEscape(args[0])
			raw, err := a.api.get(cmd.Context(), path)
			if err != nil {
				return err
			}
			if a.api.output == "" || a.api.json() {
				return printJSON(a.api.out, raw)
			}
			return a.api.printJob(raw)
		},
	}
}

// jobFields are the fields of a job's state, in the order job prints them.
var jobFields = []string{"id", "type", "status", "attempts", "priority", "batch", "submitter", "created_at", "updated_at",
	"held_by", "holder", "skipped", "error", "result", "payload"}

// printJob prints a job's state one field a line, times with their age,
// then its attempts as a table.
func (c *client) printJob(raw []byte) error {
	var job map[string]any
	if err := json.Unmarshal(raw, &job); err != nil {
		return fmt.Errorf("decode the job: %w", err)
	}
	tw := tabwriter.NewWriter(c.out, 0, 4, 2, ' ', 0)
	keys := slices.Clone(jobFields)
	for k := range job {
		if !slices.Contains(keys, k) && k != "history" {
			keys = append(keys, k)
		}
	}
	for _, k := range keys {
		v, ok := job[k]
		if !ok {
			continue
		}
		s := format(v)
		if k == "created_at" || k == "updated_at" {
			s += " (" + c.ageCell(v) + ")"
		}
		fmt.Fprintf(tw, "%s:\t%s\n", k, s)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	hist, _ := job["history"].([]any)
	if len(hist) == 0 {
		return nil
	}
	fmt.Fprintln(c.out)
	rows := make([]map[string]any, 0, len(hist))
	for _, h := range hist {
		if m, ok := h.(map[string]any); ok {
			m["took"] = took(m)
			rows = append(rows, m)
		}
	}
	return c.printTable(rows, columns{base: []column{
		col("attempt"), col("host"), col("pid"), {key: "started_at", head: "STARTED", format: c.ageCell},
		col("took"), col("error"),
	}})
}

// took is how long an attempt of a job's history ran, if it ended.
func took(attempt map[string]any) any {
	s, _ := attempt["started_at"].(string)
	e, _ := attempt["ended_at"].(string)
	start, err1 := time.Parse(time.RFC3339Nano, s)
	end, err2 := time.Parse(time.RFC3339Nano, e)
	if err1 != nil || err2 != nil {
		return nil
	}
	return human(end.Sub(start))
}

func (a *app) retryCmd() *cobra.Command {
	return a.jobAction("retry", "queue a dead job again")
}

func (a *app) cancelCmd() *cobra.Command {
	return a.jobAction("cancel", "cancel a queued or running job")
}

// jobAction is retry or cancel: POST /v1/jobs/{id}/{op}, the answer
// printed as JSON.
func (a *app) jobAction(op, short string) *cobra.Command {
	return &cobra.Command{
		Use:   op + " ID",
		Short: short,
		Args:  nargs(1, 1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.api.show(cmd.Context(), http.MethodPost, "/v1/jobs/"+url.PathEscape(args[0])+"/"+op, nil, nil)
		},
	}
}

func (a *app) abortCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "abort BATCH",
		Short: "cancel every job of BATCH not ended yet",
		Args:  nargs(1, 1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.api.show(cmd.Context(), http.MethodPost, "/v1/batches/"+url.PathEscape(args[0])+"/abort", nil, nil)
		},
	}
}

// maxWait is the longest ?wait= conductord takes.
const maxWait = 10 * time.Minute

// waitFlag is --wait: alone it means 60s, or --wait=DURATION.
type waitFlag struct{ d time.Duration }

func (w *waitFlag) String() string { return w.d.String() }
func (w *waitFlag) Type() string   { return "duration" }
func (w *waitFlag) Set(s string) error {
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 || d > maxWait {
		return fmt.Errorf("want a duration such as 30s, at most %s, got %q", maxWait, s)
	}
	w.d = d
	return nil
}

func (a *app) submitCmd() *cobra.Command {
	var wait waitFlag
	var key, prio, file string
	var chunk int
	var quiet bool
	cmd := &cobra.Command{
		Use:   "submit [--wait[=D]] [--key K] [--priority P] TYPE PAYLOAD | submit -f FILE.jsonl TYPE",
		Short: "queue a job (PAYLOAD is JSON, or - for stdin), or a file of jobs, one a line",
		Long: `Queue a job of TYPE with PAYLOAD (JSON; - reads it from stdin) and print its id.
--wait waits up to 60s (or D) for it to end and exits 3 if it is dead or not ended.

With -f FILE (- for stdin), each line of FILE is one job's payload: the whole file
is checked first (a bad line is an error naming it, and nothing is queued), then
queued as batches of --chunk lines; the batch ids are printed on stdout, one a line,
for conductorctl abort. See docs/cli.md, "submit -f".`,
		Example: `  conductorctl submit squares 7
  conductorctl submit --wait=10s squares 7
  seq 1 100000 | conductorctl submit -f - squares`,
		Args: func(cmd *cobra.Command, args []string) error {
			if file != "" {
				return nargs(1, 1)(cmd, args)
			}
			return nargs(2, 2)(cmd, args)
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if prio != "" && !slices.Contains(priorities, prio) {
				return usageErrorf("--priority: want high, normal or low, not %q", prio)
			}
			if file != "" {
				if wait.d != 0 || key != "" {
					return usageErrorf("submit -f takes neither --wait nor --key")
				}
				return a.submitFile(cmd.Context(), fileSubmit{path: file, typ: args[0], priority: prio, chunk: chunk, quiet: quiet})
			}
			if cmd.Flags().Changed("chunk") || cmd.Flags().Changed("quiet") {
				return usageErrorf("--chunk and --quiet go with -f")
			}
			return a.api.submit(cmd.Context(), args[0], args[1], wait.d, key, prio)
		},
	}
	f := cmd.Flags()
	f.Var(&wait, "wait", "wait for the job to end (60s, or --wait=DURATION)")
	f.Lookup("wait").NoOptDefVal = "60s"
	f.StringVar(&key, "key", "", "idempotency key: submissions with the same key are one job")
	f.StringVar(&prio, "priority", "", "high, normal (the default) or low")
	f.StringVarP(&file, "file", "f", "", "queue every line of FILE.jsonl (- for stdin) as a job of TYPE")
	f.IntVar(&chunk, "chunk", defaultChunk, "with -f: lines per batch (at most 10000)")
	f.BoolVarP(&quiet, "quiet", "q", false, "with -f: no progress on stderr")
	_ = cmd.RegisterFlagCompletionFunc("priority", cobra.FixedCompletions(priorities, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

// priorities are the values of submit --priority.
var priorities = []string{"high", "normal", "low"}

// maxStdinPayload bounds a payload read from stdin: the largest a
// conductor takes (its --max-payload at most).
const maxStdinPayload = 256 << 20

// submit queues one job, and with wait waits for it to end.
func (c *client) submit(ctx context.Context, typ, arg string, wait time.Duration, key, prio string) error {
	payload := []byte(arg)
	if arg == "-" {
		var err error
		if payload, err = io.ReadAll(io.LimitReader(c.stdin, maxStdinPayload+1)); err != nil {
			return fmt.Errorf("read payload from stdin: %w", err)
		}
		if len(payload) > maxStdinPayload {
			return fmt.Errorf("payload on stdin is over %d bytes, the most a conductor takes (--max-payload); nothing was queued", maxStdinPayload)
		}
	}
	if !json.Valid(payload) {
		return fmt.Errorf("payload is not valid JSON: %q (quote strings: '\"text\"')", arg)
	}
	q := url.Values{}
	if wait > 0 {
		q.Set("wait", wait.String())
	}
	if prio != "" {
		q.Set("priority", prio)
	}
	path := "/v1/jobs/" + url.PathEscape(typ)
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	hdr := http.Header{}
	if key == "" && wait > 0 {
		// So that an interrupted wait can learn the job's id (below).
		key = "conductorctl-" + uuid.NewString()
	}
	if key != "" {
		hdr.Set(names.HeaderIdempotencyKey, key)
	}
	var job struct{ ID, Status string }
	if err := c.patient(wait).do(ctx, http.MethodPost, path, payload, hdr, &job); err != nil {
		if wait > 0 && ctx.Err() != nil {
			return c.interruptedWait(ctx, typ, prio, payload, hdr, err)
		}
		return err
	}
	switch {
	case wait == 0 || job.Status == "succeeded":
		return nil
	case job.Status == "dead":
		return &ExitError{Code: ExitNotEnded, Msg: fmt.Sprintf("job %s is dead", job.ID)}
	default:
		return &ExitError{Code: ExitNotEnded, Msg: fmt.Sprintf("job %s is still %s after %s", job.ID, job.Status, wait)}
	}
}

// interruptedWait is the error of a submit --wait interrupted while it
// waited: the job is most likely queued, and only conductord knows its id.
// It is asked once more, without the wait and with the same idempotency
// key (one job, not two; or the job queued now, if the first request had
// not reached conductord), and the answer printed: the id to cancel.
func (c *client) interruptedWait(ctx context.Context, typ, prio string, payload []byte, hdr http.Header, cause error) error {
	path := "/v1/jobs/" + url.PathEscape(typ)
	if prio != "" {
		path += "?priority=" + url.QueryEscape(prio)
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), interruptedAsk)
	defer cancel()
	var job struct{ ID string }
	if err := c.do(rctx, http.MethodPost, path, payload, hdr, &job); err != nil {
		return fmt.Errorf("interrupted while waiting (%w); whether the job is queued is not known: %v", cause, err)
	}
	return fmt.Errorf("interrupted while waiting: job %s was queued, not waited for (conductorctl job %s; conductorctl cancel %s)", job.ID, job.ID, job.ID)
}

// interruptedAsk bounds the question interruptedWait asks.
const interruptedAsk = 5 * time.Second
