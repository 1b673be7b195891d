package ctl

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"time"

	"github.com/google/uuid"

	"github.com/conductor-run/conductor/internal/names"
)

// submit -f queues a file of payloads, one JSON value a line, as batches.
//
// The guarantee: a file with a bad line queues nothing. The file is read
// twice: once to check every line (JSON, at most maxFilePayload bytes),
// then to queue it in chunks of at most chunk lines and chunkBytes bytes,
// each one POST /v1/batches/{type}, so that memory holds one chunk, never
// the file. stdin is copied to a temporary file first (removed after), so
// that it too is checked whole before anything is queued. A chunk that
// fails is reported with the line it started at: every line before it is
// queued, in the batches printed on stdout (conductorctl abort BATCH), and
// conductord's error says how much of the failed chunk, if any, was.
const (
	defaultChunk = 1000
	// maxChunk is conductord's limit of lines in a batch.
	maxChunk = 10000
	// chunkBytes bounds the body of one batch, well under conductord's
	// default --max-batch-bytes (64 MiB).
	chunkBytes = 16 << 20
	// maxFilePayload bounds one line of a jobs file, so that a chunk
	// stays small: conductord's inline limit (a larger payload is passed
	// by reference, and is submitted alone: conductorctl submit TYPE
	// PAYLOAD, or POST /v1/jobs/{type}).
	maxFilePayload = 1 << 20
	// progressEvery is how often progress is written when stderr is not a
	// terminal.
	progressEvery = 5 * time.Second
	// inFlightGrace is how long an interrupted submit -f still waits for
	// the answer of the chunk in flight (a second Ctrl-C kills it at once).
	inFlightGrace = 30 * time.Second
)

type fileSubmit struct {
	path, typ, priority string
	chunk               int
	quiet               bool
}

// jobsFile is a file of payloads checked whole: its jobs (non-blank lines).
type jobsFile struct {
	f    *os.File
	name string
	jobs int
}

func (a *app) submitFile(ctx context.Context, fs fileSubmit) error {
	if fs.chunk < 1 || fs.chunk > maxChunk {
		return usageErrorf("--chunk: want 1 to %d lines, not %d", maxChunk, fs.chunk)
	}
	if fs.path == "-" && isTerminal(a.stdin) {
		// Nothing piped in: say so, or it looks hung.
		fmt.Fprintln(a.stderr, "conductorctl: reading the jobs from the terminal, one JSON value a line; end them with Ctrl-D")
	}
	jf, cleanup, err := openJobsFile(fs.path, a.stdin)
	if err != nil {
		return err
	}
	defer cleanup()
	if err := jf.check(); err != nil {
		return err
	}
	p := newProgress(a.stderr, isTerminal(a.stderr), fs.quiet, jf.jobs)
	// Each batch id is printed as soon as its batch is queued, so that a
	// run killed part way leaves the ids of what it queued; -o json
	// prints the summary at the end instead.
	printID := func(string) {}
	if !a.api.json() {
		printID = func(id string) {
			p.clear()
			fmt.Fprintln(a.stdout, id)
		}
	}
	res, err := a.api.queueFile(ctx, jf, fs, p, printID)
	p.done()
	if a.api.json() {
		if jerr := encodeJSON(a.stdout, res, "  "); jerr != nil && err == nil {
			err = jerr
		}
	}
	if err != nil {
		return err
	}
	if !fs.quiet {
		fmt.Fprintf(a.stderr, "conductorctl: queued %d jobs of %s in %d batch(es) in %s (%.0f jobs/s)\n",
			res.Jobs, fs.typ, len(res.Batches), human(time.Duration(res.Seconds*float64(time.Second))), rate(res.Jobs, res.Seconds))
	}
	return nil
}

func rate(n int, seconds float64) float64 {
	if seconds <= 0 {
		return 0
	}
	return float64(n) / seconds
}

// openJobsFile opens path, or copies stdin ("-") or a file that cannot be
// read twice (a pipe: -f <(cmd), -f /dev/stdin, a FIFO) to a temporary
// file.
func openJobsFile(path string, stdin io.Reader) (*jobsFile, func(), error) {
	if path == "-" {
		return copyJobsFile("stdin", stdin)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	if fi.IsDir() {
		f.Close()
		return nil, nil, fmt.Errorf("%s is a directory, not a file of jobs", path)
	}
	if fi.Mode().IsRegular() {
		return &jobsFile{f: f, name: path}, func() { f.Close() }, nil
	}
	defer f.Close()
	return copyJobsFile(path, f)
}

// copyJobsFile copies r to a temporary file, removed by the cleanup.
func copyJobsFile(name string, r io.Reader) (*jobsFile, func(), error) {
	f, err := os.CreateTemp("", "conductorctl-submit-*.jsonl")
	if err != nil {
		return nil, nil, fmt.Errorf("keep %s in a temporary file: %w", name, err)
	}
	cleanup := func() {
		f.Close()
		os.Remove(f.Name())
	}
	if _, err := io.Copy(f, r); err != nil {
		cleanup()
		return nil, nil, fmt.Errorf("read %s: %w", name, err)
	}
	return &jobsFile{f: f, name: name}, cleanup, nil
}

// utf8BOM is the byte-order mark some editors write at the start of a
// UTF-8 file; it is skipped there.
var utf8BOM = []byte("\xef\xbb\xbf")

// lines calls fn with every line of the file, from its start, and its
// number (from 1); a line over maxFilePayload is an error.
func (jf *jobsFile) lines(fn func(n int, line []byte) error) error {
	if _, err := jf.f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	r := bufio.NewReaderSize(jf.f, 64<<10)
	var long []byte
	for n := 1; ; n++ {
		line, err := r.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			long = append(long[:0], line...)
			for errors.Is(err, bufio.ErrBufferFull) && len(long) <= maxFilePayload+2 {
				line, err = r.ReadSlice('\n')
				long = append(long, line...)
			}
			if len(long) > maxFilePayload+2 {
				return fmt.Errorf("%s line %d: over the limit of %d bytes a job; nothing was queued", jf.name, n, maxFilePayload)
			}
			line = long
		}
		if n == 1 {
			line = bytes.TrimPrefix(line, utf8BOM)
		}
		if len(line) > 0 {
			if ferr := fn(n, bytes.TrimSpace(line)); ferr != nil {
				return ferr
			}
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read %s: %w", jf.name, err)
		}
	}
}

// check reads the whole file and counts its jobs; a line that is not one
// JSON value is an error naming it.
func (jf *jobsFile) check() error {
	jf.jobs = 0
	return jf.lines(func(n int, line []byte) error {
		if len(line) == 0 {
			return nil
		}
		if len(line) > maxFilePayload {
			return fmt.Errorf("%s line %d: payload of %d bytes is over the limit of %d; nothing was queued", jf.name, n, len(line), maxFilePayload)
		}
		if !json.Valid(line) {
			var v any
			err := json.Unmarshal(line, &v)
			return fmt.Errorf("%s line %d: not one JSON value (%v): %.60q; nothing was queued", jf.name, n, err, line)
		}
		jf.jobs++
		return nil
	})
}

// fileResult is what submit -f queued: printed with -o json.
type fileResult struct {
	Type    string   `json:"type"`
	Jobs    int      `json:"jobs"`
	Batches []string `json:"batches"`
	Seconds float64  `json:"seconds"`
}

// queueFile queues the checked file in chunks; queued is called with
// each batch's id as soon as it is queued.
func (c *client) queueFile(ctx context.Context, jf *jobsFile, fs fileSubmit, p *progress, queued func(id string)) (fileResult, error) {
	res := fileResult{Type: fs.typ, Batches: []string{}}
	start := time.Now()
	run := uuid.NewString()
	var body bytes.Buffer
	first, lines := 0, 0 // the chunk's first line number, and its jobs
	flush := func() error {
		if lines == 0 {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("interrupted (%v): queued %d of %d jobs (every line of %s before line %d, in the batches printed); nothing from line %d on was sent",
				context.Cause(ctx), res.Jobs, jf.jobs, jf.name, first, first)
		}
		// The chunk in flight is not cancelled with ctx: conductord may
		// have queued it, and only its answer names its batch. An
		// interrupt waits for that answer (inFlightGrace at most), then
		// stops before the next chunk.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), inFlightGrace)
		key := fmt.Sprintf("conductorctl-%s-%d", run, len(res.Batches))
		id, err := c.queueChunk(cctx, fs, key, body.Bytes())
		cancel()
		if err != nil {
			return fmt.Errorf("queued %d of %d jobs (every line of %s before line %d, in the batches printed); the batch of lines %d on failed: %w",
				res.Jobs, jf.jobs, jf.name, first, first, err)
		}
		res.Batches = append(res.Batches, id)
		queued(id)
		res.Jobs += lines
		p.add(lines)
		body.Reset()
		lines = 0
		return nil
	}
	err := jf.lines(func(n int, line []byte) error {
		if len(line) == 0 {
			return nil
		}
		if lines > 0 && (lines == fs.chunk || body.Len()+len(line)+1 > chunkBytes) {
			if err := flush(); err != nil {
				return err
			}
		}
		if lines == 0 {
			first = n
		}
		body.Write(line)
		body.WriteByte('\n')
		lines++
		return nil
	})
	if err == nil {
		err = flush()
	}
	res.Seconds = time.Since(start).Seconds()
	return res, err
}

// queueChunk sends one batch and returns its id. A batch whose answer is
// lost (no answer, or a 503) is sent once more with the same idempotency
// key, which completes it rather than queue it twice.
func (c *client) queueChunk(ctx context.Context, fs fileSubmit, key string, body []byte) (string, error) {
	path := "/v1/batches/" + url.PathEscape(fs.typ)
	if fs.priority != "" {
		path += "?priority=" + url.QueryEscape(fs.priority)
	}
	hdr := http.Header{"Content-Type": {"application/x-ndjson"}, names.HeaderIdempotencyKey: {key}}
	var err error
	for try := range 2 {
		if try > 0 {
			c.log.Warn("sending a batch again", "key", key, "err", err)
		}
		var resp *http.Response
		var raw []byte
		resp, raw, err = c.send(ctx, http.MethodPost, path, body, hdr)
		if err != nil {
			if ctx.Err() != nil {
				return "", err
			}
			continue
		}
		if resp.StatusCode >= 300 {
			err = c.apiError(http.MethodPost, path, resp, raw)
			if resp.StatusCode != http.StatusServiceUnavailable {
				return "", err
			}
			if werr := waitRetryAfter(ctx, resp.Header.Get("Retry-After")); werr != nil {
				return "", werr
			}
			continue
		}
		var b struct{ ID string }
		if err := json.Unmarshal(raw, &b); err != nil || b.ID == "" {
			return "", fmt.Errorf("decode the batch of %s: %q", path, raw)
		}
		return b.ID, nil
	}
	return "", err
}

// waitRetryAfter waits as long as a 503's Retry-After asks, in seconds
// (conductord sends 1 when it reads too many batches at once), at most 5s.
func waitRetryAfter(ctx context.Context, header string) error {
	secs, err := strconv.Atoi(header)
	if err != nil || secs <= 0 {
		return nil
	}
	t := time.NewTimer(time.Duration(min(secs, 5)) * time.Second)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return context.Cause(ctx)
	case <-t.C:
		return nil
	}
}
