package broker_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/conductor-run/conductor/internal/proto"
)

// The test binary plays the worker: with BROKER_TEST_WORKER set, TestMain
// runs the fake worker of that name instead of the tests.
const (
	envWorker = "BROKER_TEST_WORKER"
	// envState names a file whose creation marks the first run of a
	// worker, for fakes that misbehave once and then work.
	envState = "BROKER_TEST_STATE"
)

var fakeWorkers = map[string]func() int{
	"echo":           runEcho,
	"framed-echo":    runFramedEcho,
	"crash-on-job":   runCrashOnJob,
	"never-ready":    runNeverReady,
	"garbage":        runGarbage,
	"ignore-sigterm": runIgnoreSigterm,
	"sleep-job":      runSleepJob,
	"fifo-job":       runFIFOJob,
	"deaf":           runDeaf,
	"always-deaf":    runAlwaysDeaf,
	"busy":           runBusy,
	"with-child":     runWithChild,
	"service":        runService,
	"idle-child":     runIdleChild,
	"alloc":          runAlloc,
	"crash-later":    runCrashLater,
	"message":        runMessage,
	"http":           runHTTP,
	"cancel-job":     runCancelJob,
	"ignore-cancel":  runIgnoreCancel,
	"hog":            runHog,
	"slow-job":       runSlowJob,
	"grow":           runGrow,
	"ask":            runAsk,
	"keeper":         runKeeper,
	"counter":        runCounter,
}

func TestMain(m *testing.M) {
	if mode := os.Getenv(envWorker); mode != "" {
		run, ok := fakeWorkers[mode]
		if !ok {
			fmt.Fprintf(os.Stderr, "unknown %s=%q\n", envWorker, mode)
			os.Exit(2)
		}
		os.Exit(run())
	}
	goleak.VerifyTestMain(m)
}

// channel is the worker's end of the channel protocol.
type channel struct {
	in  *proto.Reader
	out *proto.Writer
	raw *os.File // fd 4, for writing garbage
}

func openChannel() *channel {
	out := os.NewFile(proto.FDFromWorker, "from-worker")
	return &channel{
		in:  proto.NewReader(os.NewFile(proto.FDToWorker, "to-worker"), 0),
		out: proto.NewWriter(out),
		raw: out,
	}
}

func (c *channel) send(m proto.Message) {
	if err := c.out.Write(m); err != nil {
		fmt.Fprintln(os.Stderr, "fake worker:", err)
		os.Exit(10)
	}
}

// serve reads fd 3 and calls onJob for each job until EOF or the shutdown
// op. onJob returns false to stop serving.
func (c *channel) serve(onJob func(m proto.Message) bool) {
	for {
		m, err := c.in.Read()
		if err != nil {
			return
		}
		switch m.Op {
		case proto.OpShutdown:
			return
		case proto.OpJob:
			if !onJob(m) {
				return
			}
		}
	}
}

func (c *channel) echo(m proto.Message) bool {
	result := m.Payload
	if string(m.Payload) == `"env"` {
		wd, _ := os.Getwd()
		result, _ = json.Marshal(map[string]string{
			"pool":     os.Getenv("CONDUCTOR_POOL"),
			"index":    os.Getenv("CONDUCTOR_WORKER_INDEX"),
			"host":     os.Getenv("CONDUCTOR_HOST"),
			"protocol": os.Getenv("CONDUCTOR_PROTOCOL"),
			"extra":    os.Getenv("BROKER_TEST_EXTRA"),
			"dir":      wd,
		})
	}
	c.send(proto.Message{Op: proto.OpDone, ID: m.ID, Result: result})
	return true
}

// firstRun reports whether this is the first worker of the test to ask.
func firstRun() bool {
	path := os.Getenv(envState)
	if path == "" {
		return true
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return false
	}
	f.Close()
	return true
}

// blockForever blocks until the process is killed (SIGUSR2 aside).
func blockForever() {
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGUSR2)
	for range c {
	}
}

// runEcho: ready, then each job's result is its payload.
func runEcho() int {
	c := openChannel()
	c.send(proto.Message{Op: proto.OpReady})
	c.serve(c.echo)
	return 0
}

// runFramedEcho: ready, taking payloads framed and four jobs queued, then
// each job's result is its payload's bytes as a JSON string.
func runFramedEcho() int {
	c := openChannel()
	c.send(proto.Message{Op: proto.OpReady, Framed: true, Prefetch: 4})
	c.serve(func(m proto.Message) bool {
		result, _ := json.Marshal(string(m.Payload))
		c.send(proto.Message{Op: proto.OpDone, ID: m.ID, Result: result})
		return true
	})
	return 0
}

// runCrashOnJob: ready, then on the first job of the test's first worker,
// "dying" on stderr and exit 3; later workers echo.
func runCrashOnJob() int {
	c := openChannel()
	first := firstRun()
	c.send(proto.Message{Op: proto.OpReady})
	c.serve(func(m proto.Message) bool {
		if first {
			fmt.Fprintln(os.Stderr, "dying")
			os.Exit(3)
		}
		return c.echo(m)
	})
	return 0
}

// runNeverReady: never sends ready.
func runNeverReady() int {
	c := openChannel()
	c.serve(func(proto.Message) bool { return true })
	blockForever()
	return 0
}

// runGarbage: garbage lines, a line over the limit and an unknown op, then echo.
func runGarbage() int {
	c := openChannel()
	long := `{"op":"done","error":"` + strings.Repeat("x", proto.DefaultMaxLine) + `"}`
	for _, line := range []string{"not json at all", `{"no":"op"}`, long, `{"op":"frobnicate"}`, `{"op":"done","id":"nobody"}`} {
		if _, err := io.WriteString(c.raw, line+"\n"); err != nil {
			return 11
		}
	}
	c.send(proto.Message{Op: proto.OpReady})
	c.serve(c.echo)
	return 0
}

// runIgnoreSigterm: ignores SIGTERM, holds every job, ignores shutdown.
func runIgnoreSigterm() int {
	signal.Ignore(syscall.SIGTERM)
	c := openChannel()
	c.send(proto.Message{Op: proto.OpReady})
	for {
		if _, err := c.in.Read(); errors.Is(err, io.EOF) {
			break
		}
	}
	blockForever()
	return 0
}

// runSleepJob: holds its job until shutdown or EOF, then finishes it.
func runSleepJob() int {
	c := openChannel()
	c.send(proto.Message{Op: proto.OpReady})
	var held *proto.Message
	c.serve(func(m proto.Message) bool {
		held = &m
		return true
	})
	if held != nil {
		c.send(proto.Message{Op: proto.OpDone, ID: held.ID, Result: json.RawMessage(`"slept"`)})
	}
	return 0
}

// runFIFOJob: each job's payload is the path of a FIFO; the job ends with
// the line read from it as its result.
func runFIFOJob() int {
	c := openChannel()
	c.send(proto.Message{Op: proto.OpReady})
	c.serve(func(m proto.Message) bool {
		var path string
		if err := json.Unmarshal(m.Payload, &path); err != nil {
			c.send(proto.Message{Op: proto.OpDone, ID: m.ID, Error: err.Error()})
			return true
		}
		b, err := os.ReadFile(path)
		if err != nil {
			c.send(proto.Message{Op: proto.OpDone, ID: m.ID, Error: err.Error()})
			return true
		}
		result, _ := json.Marshal(strings.TrimSpace(string(b)))
		c.send(proto.Message{Op: proto.OpDone, ID: m.ID, Result: result})
		return true
	})
	return 0
}

// runDeaf: the test's first worker closes fd 3, says ready and waits to be
// killed; later workers echo.
func runDeaf() int {
	if !firstRun() {
		return runEcho()
	}
	c := openChannel()
	os.NewFile(proto.FDToWorker, "to-worker").Close()
	c.send(proto.Message{Op: proto.OpReady})
	blockForever()
	return 0
}

// runAlwaysDeaf: like runDeaf, in every process: no job can reach it.
func runAlwaysDeaf() int {
	c := openChannel()
	os.NewFile(proto.FDToWorker, "to-worker").Close()
	c.send(proto.Message{Op: proto.OpReady})
	blockForever()
	return 0
}

// runBusy: ready, then busy until SIGUSR1, then ready again; a job
// received while busy fails.
func runBusy() int {
	usr1 := make(chan os.Signal, 1)
	signal.Notify(usr1, syscall.SIGUSR1)
	c := openChannel()
	var busy atomic.Bool
	busy.Store(true)
	c.send(proto.Message{Op: proto.OpReady})
	c.send(proto.Message{Op: proto.OpBusy})
	go func() {
		<-usr1
		busy.Store(false)
		c.send(proto.Message{Op: proto.OpReady})
	}()
	c.serve(func(m proto.Message) bool {
		if busy.Load() {
			c.send(proto.Message{Op: proto.OpDone, ID: m.ID, Error: "job while busy"})
			return true
		}
		return c.echo(m)
	})
	return 0
}

// runWithChild: starts a child in its process group that ignores SIGTERM,
// prints "child=PID" on stdout, then echoes.
func runWithChild() int {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envWorker+"=idle-child")
	if err := cmd.Start(); err != nil {
		fmt.Fprintln(os.Stderr, "start child:", err)
		return 12
	}
	fmt.Printf("child=%d\n", cmd.Process.Pid)
	return runEcho()
}

// runIdleChild: ignores SIGTERM and waits to be killed.
func runIdleChild() int {
	signal.Ignore(syscall.SIGTERM)
	blockForever()
	return 0
}

// runService: a ProtocolNone process. With a socket from the pool, it
// answers each connection with "PID LISTEN_PID". It exits on SIGTERM.
func runService() int {
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)
	if os.Getenv("LISTEN_FDS") == "1" {
		l, err := net.FileListener(os.NewFile(3, "listener"))
		if err != nil {
			fmt.Fprintln(os.Stderr, "listener:", err)
			return 13
		}
		go func() {
			for {
				conn, err := l.Accept()
				if err != nil {
					return
				}
				fmt.Fprintf(conn, "%d %s\n", os.Getpid(), os.Getenv("LISTEN_PID"))
				conn.Close()
			}
		}()
	}
	fmt.Println("service up")
	<-term
	return 0
}

// runAlloc: an echo worker that first fills BROKER_TEST_ALLOC_MB
// mebibytes of memory, for max_rss.
func runAlloc() int {
	var mb int
	fmt.Sscan(os.Getenv("BROKER_TEST_ALLOC_MB"), &mb)
	ballast := make([]byte, mb<<20)
	for i := range ballast {
		ballast[i] = byte(i)
	}
	c := openChannel()
	c.send(proto.Message{Op: proto.OpReady})
	c.serve(c.echo)
	return int(ballast[len(ballast)-1]) & 0 // keep ballast alive
}

// runCrashLater: ready, then exits with status 3 after 200ms.
func runCrashLater() int {
	c := openChannel()
	c.send(proto.Message{Op: proto.OpReady})
	<-time.After(200 * time.Millisecond) // the fake's own behaviour: it dies 200ms after ready
	return 3
}

// runMessage: ready, then a message op, then echo.
func runMessage() int {
	c := openChannel()
	c.send(proto.Message{Op: proto.OpReady})
	c.send(proto.Message{Op: proto.OpMessage, Data: json.RawMessage(`{"hello":"world"}`)})
	c.serve(c.echo)
	return 0
}

// runHTTP: a ProtocolNone HTTP server on the pool's socket that answers
// every request with its pid. On SIGTERM it stops accepting, answers every
// connection it accepted, and exits. (http.Server.Shutdown alone would drop
// a connection accepted just before it whose request it had not read yet.)
func runHTTP() int {
	l, err := net.FileListener(os.NewFile(3, "listener"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "listener:", err)
		return 13
	}
	var conns sync.WaitGroup
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			fmt.Fprintln(w, os.Getpid())
		}),
		ConnState: func(_ net.Conn, st http.ConnState) {
			switch st {
			case http.StateNew:
				conns.Add(1)
			case http.StateClosed, http.StateHijacked:
				conns.Done()
			}
		},
	}
	srv.SetKeepAlivesEnabled(false) // each connection closes after its response
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)
	go func() {
		<-term
		l.Close()
	}()
	if err := srv.Serve(l); !errors.Is(err, net.ErrClosed) {
		fmt.Fprintln(os.Stderr, "serve:", err)
		return 14
	}
	conns.Wait() // every connection Serve accepted was counted before it returned
	return 0
}

// runCancelJob: holds each job until workerd cancels it, then reports it
// failed.
func runCancelJob() int {
	c := openChannel()
	c.send(proto.Message{Op: proto.OpReady})
	for {
		m, err := c.in.Read()
		if err != nil || m.Op == proto.OpShutdown {
			return 0
		}
		if m.Op == proto.OpCancel {
			c.send(proto.Message{Op: proto.OpDone, ID: m.ID, Error: "cancelled by workerd"})
		}
	}
}

// runIgnoreCancel: holds each job, ignores cancel; SIGTERM ends it.
func runIgnoreCancel() int {
	c := openChannel()
	c.send(proto.Message{Op: proto.OpReady})
	for {
		if _, err := c.in.Read(); err != nil {
			blockForever()
		}
	}
}

// hogLimit is how much memory a hog worker fills before it gives up on
// being killed for it.
const hogLimit = 1 << 30

// runHog: ready; a job whose payload is "hog" fills memory a mebibyte at a
// time until the process is killed, and fails if it reaches hogLimit
// first; any other job is held until shutdown.
func runHog() int {
	c := openChannel()
	c.send(proto.Message{Op: proto.OpReady})
	var hoard [][]byte
	c.serve(func(m proto.Message) bool {
		if string(m.Payload) != `"hog"` {
			return true
		}
		for len(hoard) < hogLimit>>20 {
			b := make([]byte, 1<<20)
			for i := 0; i < len(b); i += 4 << 10 {
				b[i] = 1 // touch every page: it counts once written
			}
			hoard = append(hoard, b)
		}
		c.send(proto.Message{Op: proto.OpDone, ID: m.ID, Error: fmt.Sprintf("filled %d MiB and was not killed", len(hoard))})
		return true
	})
	return 0
}

// runSlowJob: ready; each job's payload is a number of milliseconds: the
// worker works that long (a sleep is its work), then answers with the
// payload as result, whatever cancel ops came meanwhile (it skips them).
func runSlowJob() int {
	c := openChannel()
	c.send(proto.Message{Op: proto.OpReady})
	c.serve(func(m proto.Message) bool {
		var ms int
		if err := json.Unmarshal(m.Payload, &ms); err != nil {
			c.send(proto.Message{Op: proto.OpDone, ID: m.ID, Error: err.Error()})
			return true
		}
		time.Sleep(time.Duration(ms) * time.Millisecond)
		c.send(proto.Message{Op: proto.OpDone, ID: m.ID, Result: m.Payload})
		return true
	})
	return 0
}

// runGrow: a service that grows, allocating and touching 10 MB every
// 10 ms until it is killed; on SIGTERM it writes its peak resident memory
// (VmHWM, in kB) to the file BROKER_TEST_PEAK_FILE and exits.
func runGrow() int {
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)
	tick := time.NewTicker(10 * time.Millisecond)
	var hoard [][]byte
	for {
		select {
		case <-term:
			status, _ := os.ReadFile("/proc/self/status")
			for line := range strings.Lines(string(status)) {
				if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
					_ = os.WriteFile(os.Getenv("BROKER_TEST_PEAK_FILE"), []byte(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB"))), 0o600)
				}
			}
			return int(len(hoard)) & 0
		case <-tick.C:
			b := make([]byte, 10_000_000)
			for i := 0; i < len(b); i += 4 << 10 {
				b[i] = 1 // touch every page: it counts once written
			}
			hoard = append(hoard, b)
		}
	}
}

// runAsk, for a job whose payload is a number n, sends n lookup ops at
// once (req 1 to n, key "k<req>"), tells of each reply with a message op
// (its req), and answers the job with the replies, in the order they
// came, once it has them all.
func runAsk() int {
	c := openChannel()
	c.send(proto.Message{Op: proto.OpReady})
	c.serve(func(m proto.Message) bool {
		var n int
		_ = json.Unmarshal(m.Payload, &n)
		var lines []byte
		for i := 1; i <= n; i++ {
			lines, _ = proto.Append(lines, proto.Message{Op: proto.OpLookup, Req: uint64(i), Do: "get", Name: "rates", Key: fmt.Sprintf("k%d", i)})
		}
		if err := c.out.WriteLines(lines, "lookups"); err != nil {
			return false
		}
		var replies []proto.Message
		for len(replies) < n {
			r, err := c.in.Read()
			if err != nil {
				return false
			}
			if r.Op == proto.OpReply {
				replies = append(replies, r)
				c.send(proto.Message{Op: proto.OpMessage, Data: json.RawMessage(strconv.FormatUint(r.Req, 10))})
			}
		}
		result, _ := json.Marshal(replies)
		c.send(proto.Message{Op: proto.OpDone, ID: m.ID, Result: result})
		return true
	})
	return 0
}

// runKeeper keeps lookup answers (its ready op's cache): for a job whose
// payload is a key, it sends a get of it and answers the job at once;
// each reply and drop it receives it tells of with a message op, the line
// as its data.
func runKeeper() int {
	c := openChannel()
	c.send(proto.Message{Op: proto.OpReady, Cache: 8})
	var req uint64
	for {
		m, err := c.in.Read()
		if err != nil {
			return 0
		}
		switch m.Op {
		case proto.OpShutdown:
			return 0
		case proto.OpJob:
			var key string
			_ = json.Unmarshal(m.Payload, &key)
			req++
			c.send(proto.Message{Op: proto.OpLookup, Req: req, Do: "get", Name: "rates", Key: key})
			c.send(proto.Message{Op: proto.OpDone, ID: m.ID})
		case proto.OpReply, proto.OpDrop:
			data, _ := json.Marshal(m)
			c.send(proto.Message{Op: proto.OpMessage, Data: data})
		}
	}
}

// runCounter, for a job whose payload is the counters of a count op,
// sends that op, then answers the job.
func runCounter() int {
	c := openChannel()
	c.send(proto.Message{Op: proto.OpReady})
	c.serve(func(m proto.Message) bool {
		var counters map[string]float64
		_ = json.Unmarshal(m.Payload, &counters)
		c.send(proto.Message{Op: proto.OpCount, Counters: counters})
		c.send(proto.Message{Op: proto.OpDone, ID: m.ID})
		return true
	})
	return 0
}
