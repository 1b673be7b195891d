// Command cluster-service does in conductor what a cluster-service
// program did: it runs copies of a web server as supervised workers on
// one shared socket, replaces a worker that dies, and restarts them all
// without a request refused. It uses pkg/broker, the supervisor workerd
// runs, in-process (cluster-service's start(options)); a real deployment
// runs `workerd --pool 'name=web,protocol=none,count=2,listen=:8080,cmd=…'`
// and steers it with conductorctl.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/conductor-run/conductor/pkg/broker"
)

// serve is a worker: a web server on the socket workerd passed it
// (CONDUCTOR_LISTEN_FD), answering with its pid.
//
// On SIGTERM it stops accepting and ends each connection after the
// request it is reading: the shared socket keeps queueing new connections
// for the other workers, so none is refused. http.Server.Shutdown alone
// is not enough here: it closes, unanswered, a connection whose request
// arrives after the shutdown began.
func serve() error {
	fd, err := strconv.Atoi(os.Getenv("CONDUCTOR_LISTEN_FD"))
	if err != nil {
		return fmt.Errorf("no socket: %w", err)
	}
	ln, err := net.FileListener(os.NewFile(uintptr(fd), "listener"))
	if err != nil {
		return err
	}
	var conns sync.WaitGroup // the connections accepted and not yet closed
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			fmt.Fprintf(w, "served by %d\n", os.Getpid())
		}),
		ReadHeaderTimeout: 5 * time.Second,
		IdleTimeout:       time.Minute,
		ConnState: func(_ net.Conn, s http.ConnState) {
			switch s {
			case http.StateNew:
				conns.Add(1)
			case http.StateHijacked, http.StateClosed:
				conns.Done()
			}
		},
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		srv.SetKeepAlivesEnabled(false) // idle connections close; busy ones after their answer
		_ = ln.Close()                  // Serve returns; the socket stays open in workerd
	}()
	if err := srv.Serve(ln); !errors.Is(err, net.ErrClosed) {
		return err
	}
	// Serve has returned, so no connection is added any more: wait for the
	// accepted ones to be answered, within the stop timeout's margin.
	ended := make(chan struct{})
	go func() { conns.Wait(); close(ended) }()
	select {
	case <-ended:
	case <-time.After(5 * time.Second):
	}
	return srv.Close()
}

func main() {
	if os.Getenv("CLUSTER_SERVICE_WORKER") == "1" {
		if err := serve(); err != nil {
			fmt.Fprintln(os.Stderr, "worker:", err)
			os.Exit(1)
		}
		return
	}
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "cluster-service:", err)
		os.Exit(1)
	}
}

func run() error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	pool, err := broker.NewPool(broker.Config{Spec: broker.Spec{
		Name: "web", Count: 2, Protocol: broker.ProtocolNone, Listen: "127.0.0.1:0",
		Cmd: []string{self}, Env: []string{"CLUSTER_SERVICE_WORKER=1"},
	}})
	if err != nil {
		return err
	}
	ctx := context.Background()
	if err := pool.Start(ctx); err != nil {
		return err
	}
	defer pool.Stop()
	url := "http://" + pool.ListenAddr().String() + "/"
	get := func() (string, error) {
		resp, err := http.Get(url)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return string(b), err
	}
	pids := func() map[int]bool {
		m := map[int]bool{}
		for _, w := range pool.Workers() {
			if w.PID != 0 && w.State == broker.WorkerReady {
				m[w.PID] = true
			}
		}
		return m
	}
	waitFor := func(what string, ok func() bool) error {
		deadline := time.Now().Add(30 * time.Second)
		for !ok() {
			if time.Now().After(deadline) {
				return fmt.Errorf("%s: not within 30s", what)
			}
			time.Sleep(20 * time.Millisecond) // polling the pool's state
		}
		return nil
	}
	if err := waitFor("2 workers up", func() bool { return len(pids()) == 2 }); err != nil {
		return err
	}
	if _, err := get(); err != nil {
		return err
	}
	fmt.Println("2 workers serve one socket")

	// A worker dies: it is replaced.
	before := pids()
	for pid := range before {
		_ = syscall.Kill(pid, syscall.SIGKILL)
		break
	}
	if err := waitFor("the dead worker replaced", func() bool {
		now := pids()
		return len(now) == 2 && !equal(now, before)
	}); err != nil {
		return err
	}
	fmt.Println("a killed worker was replaced")

	// Restart them all, one at a time, while requests go on: none refused.
	done := make(chan error, 1)
	go func() { done <- pool.Recycle(ctx) }()
	failed, served := 0, 0
	var firstErr error
	for {
		select {
		case err := <-done:
			if err != nil {
				return err
			}
			fmt.Printf("all workers restarted; %d requests served meanwhile, %d refused\n", served, failed)
			if failed > 0 {
				return fmt.Errorf("%d requests refused during the restart, the first: %w", failed, firstErr)
			}
			return nil
		default:
		}
		if _, err := get(); err != nil {
			if firstErr == nil {
				firstErr = err
			}
			failed++
		} else {
			served++
		}
	}
}

func equal(a, b map[int]bool) bool {
	if len(a) != len(b) {
		return false
	}
	for k := range a {
		if !b[k] {
			return false
		}
	}
	return true
}
