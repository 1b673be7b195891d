package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/conductor-run/conductor/internal/cgroup"
	"github.com/conductor-run/conductor/internal/proto"
)

// listenFDChannel is the fd of the Listen socket in a channel worker, after
// the channel's fds 3 and 4. A ProtocolNone worker gets it as fd 3.
const listenFDChannel = 5

// outputGrace bounds the wait, after a process was reaped and its group
// killed, for its pipes to reach EOF. They do at once unless a process that
// left the group still holds them; then they are closed on our side.
const outputGrace = time.Second

// cgroupKillTimeout bounds the wait, after a process was reaped and its
// cgroup killed, for the cgroup to empty. Only a process in
// uninterruptible sleep (a hung NFS read) takes longer than a moment.
const cgroupKillTimeout = 10 * time.Second

// proc is one running worker process. Its fields are set by startProc; the
// slot goroutine that started it owns in, w, inClosed and sigkillAt; the
// Wait goroutine writes exit, code, signal, reaped, oomRose, memPeak and
// cgErr before closing exited. leaf is safe for concurrent use (kill
// signals it while the Wait goroutine may be emptying it).
//
// Its goroutines are owned by that slot goroutine, not services of their
// own: the Wait goroutine ends when the process is reaped (exited); each
// output reader when its pipe ends or release closes it (readerDone). The
// slot goroutine calls release, which waits for every reader, before it
// starts another process; so none outlives its slot.
type proc struct {
	pid     int
	started time.Time
	cancel  context.CancelFunc // cancels the Cmd's context: SIGTERM to the group, SIGKILL after KillTimeout
	// waitDelay is the Cmd's WaitDelay: os/exec SIGKILLs the process that
	// long after terminate.
	waitDelay time.Duration
	// leaf is the process's cgroup, nil if its pool has none. When the
	// process ends, every process in it is killed, whatever session or
	// process group it made; its count of OOM kills is the process's own.
	leaf *cgroup.Leaf
	// oomBase is the count of OOM kills that oomCount reads, just before
	// the process started; -1 if unknown.
	oomBase int64
	// sigkillAt is the earliest time this side may have sent the process
	// SIGKILL (at kill, or waitDelay after terminate); zero if it sent none.
	sigkillAt time.Time

	in       *os.File      // our end of the worker's fd 3; nil for ProtocolNone
	w        *proto.Writer // writes to in
	inClosed bool

	// msgs carries the lines read from the worker's fd 4; it is closed
	// when fd 4 ends. Nil for ProtocolNone.
	msgs   chan workerLine
	stderr *tail

	readFiles  []*os.File    // our read ends, closed by release
	readerDone chan struct{} // one send per reader goroutine
	readers    int           // reader goroutines not yet received from readerDone; slot goroutine only
	quit       chan struct{} // closed by release: readers stop sending

	exited chan struct{} // closed by the Wait goroutine once the process is reaped
	exit   string        // how it ended: "exit status 3", "signal: killed"
	code   int           // its exit code, -1 if killed by a signal
	signal string        // the signal that killed it, if any
	reaped time.Time     // when Wait returned
	// oomRose: SIGKILL ended the process and the count of OOM kills
	// (oomCount) is above oomBase. See oomKilled.
	oomRose bool
	// cgErr says why the leaf could not be emptied or removed, if so.
	cgErr error
	// memPeak is the most memory the leaf's processes used, -1 if unknown.
	memPeak int64
	// descendantOOMs counts the processes of its leaf, other than itself,
	// that the OOM killer ended while it ran.
	descendantOOMs int64
}

// startProc starts one process of c through sp. The process gets its own
// process group, stdout and stderr pipes read into the log, and for a
// channel pool the pipes of fds 3 and 4; in a pool with a cgroup, a leaf
// of it, which it is born in.
func startProc(sp *spawner, c procConfig) (*proc, error) {
	var leaf *cgroup.Leaf
	if c.cg != nil {
		var err error
		if leaf, err = c.cg.NewLeaf(c.leafName(), c.maxRSS); err != nil {
			return nil, fmt.Errorf("cgroup: %w", err)
		}
	}
	p, err := startIn(sp, c, leaf)
	if err != nil && leaf != nil {
		if rerr := leaf.Remove(); rerr != nil {
			c.log.Warn("cgroups: cannot remove a worker's cgroup", "err", rerr)
		}
	}
	return p, err
}

// startIn is startProc once the leaf, if any, is made.
func startIn(sp *spawner, c procConfig, leaf *cgroup.Leaf) (*proc, error) {
	// pipes: stdout, stderr[, fd 3, fd 4]; each is {read end, write end}.
	n := 2
	if c.channel {
		n = 4
	}
	pipes, err := openPipes(n)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	// command builds the Cmd; a second one if the first could not be born
	// in its cgroup (see startInLeaf).
	command := func() *exec.Cmd {
		cmd := exec.CommandContext(ctx, c.path)
		cmd.Args = c.args
		cmd.Dir = c.dir
		cmd.Env = c.env
		cmd.SysProcAttr = sysProcAttr()
		cmd.WaitDelay = c.kill
		cmd.Cancel = func() error { return signalGroup(cmd.Process.Pid, syscall.SIGTERM) }
		cmd.Stdout, cmd.Stderr = pipes[0][1], pipes[1][1]
		if c.channel {
			cmd.ExtraFiles = []*os.File{pipes[2][0], pipes[3][1]}
		}
		if c.listener != nil {
			cmd.ExtraFiles = append(cmd.ExtraFiles, c.listener)
		}
		return cmd
	}
	p := &proc{
		cancel:     cancel,
		waitDelay:  c.kill,
		leaf:       leaf,
		stderr:     &tail{},
		readerDone: make(chan struct{}, 3),
		quit:       make(chan struct{}),
		exited:     make(chan struct{}),
	}
	p.oomBase = p.oomCount() // before the fork: an OOM kill of the new process counts after it
	childEnds := []*os.File{pipes[0][1], pipes[1][1]}
	p.readFiles = []*os.File{pipes[0][0], pipes[1][0]}
	if c.channel {
		childEnds = append(childEnds, pipes[2][0], pipes[3][1])
		p.in, p.w = pipes[2][1], proto.NewWriter(pipes[2][1])
		p.readFiles = append(p.readFiles, pipes[3][0])
	}

	cmd, err := startInLeaf(sp, c, leaf, command)
	closeFiles(childEnds)
	if err != nil {
		switch {
		case errors.Is(err, syscall.EAGAIN) && c.pids > 0:
			err = fmt.Errorf("%w (the pool's pids limit, %d tasks, is reached)", err, c.pids)
		case errors.Is(err, syscall.ENOMEM) && leaf != nil && leaf.MemoryLimited():
			err = fmt.Errorf("%w (max_rss, %d bytes, leaves no room to start the process)", err, c.maxRSS)
		}
		closeFiles(p.readFiles)
		if p.in != nil {
			p.in.Close()
		}
		cancel()
		return nil, err
	}
	p.pid = cmd.Process.Pid
	p.started = time.Now()
	go p.wait(cmd)
	p.startReaders(c.log, c.output)
	return p, nil
}

// cloneIntoCgroup is cleared, for the life of the process, the first time
// clone3 is refused (ENOSYS: a seccomp filter such as Docker's default, or
// a kernel before 5.7); processes are then moved into their cgroup2 leaf
// right after they start.
var cloneIntoCgroup atomic.Bool

func init() { cloneIntoCgroup.Store(true) }

// startInLeaf starts a Cmd that command builds through sp, born in leaf if
// it is not nil: in its cgroup2 directory by clone3 CLONE_INTO_CGROUP
// where the kernel lets it, else moved there right after the start (a
// process it forks in that instant stays out of the cgroup2 leaf; its v1
// cgroups, entered by the forking thread, hold it still); in its v1
// cgroups by the forking thread, but a v1 cpu cgroup, which it joins
// right after the start (cgroup.Leaf.EnterThread, Adopt).
func startInLeaf(sp *spawner, c procConfig, leaf *cgroup.Leaf, command func() *exec.Cmd) (*exec.Cmd, error) {
	cmd := command()
	if leaf == nil {
		return cmd, sp.start(cmd, nil).err
	}
	var fd *os.File
	if cloneIntoCgroup.Load() && !c.noCloneInto {
		var err error
		if fd, err = leaf.OpenFD(); err != nil {
			return nil, fmt.Errorf("cgroup: %w", err)
		}
	}
	if fd != nil {
		defer fd.Close() // the child has been born once Start returns
		bornIn(cmd.SysProcAttr, int(fd.Fd()))
	}
	reply := sp.start(cmd, leaf)
	if fd != nil && errors.Is(reply.err, syscall.ENOSYS) && cloneIntoCgroup.CompareAndSwap(true, false) {
		c.log.Warn("cgroups: clone3 refused (ENOSYS); worker processes are moved into their cgroup right after they start", "err", reply.err)
	}
	if fd != nil && errors.Is(reply.err, syscall.ENOSYS) {
		cmd = command()
		reply = sp.start(cmd, leaf)
		fd = nil
	}
	if reply.leaveErr != nil {
		c.log.Error("cgroups: the forking thread could not leave a worker's cgroup", "err", reply.leaveErr)
	}
	if reply.err != nil {
		return nil, reply.err
	}
	if err := leaf.Adopt(cmd.Process.Pid, fd != nil); err != nil {
		c.log.Error("cgroups: a worker not moved into its cgroup", "pid", cmd.Process.Pid, "err", err)
	}
	return cmd, nil
}

// openPipes returns n pipes as {read end, write end}, or none and an error.
func openPipes(n int) ([][2]*os.File, error) {
	pipes := make([][2]*os.File, 0, n)
	for range n {
		r, w, err := os.Pipe()
		if err != nil {
			for _, p := range pipes {
				closeFiles(p[:])
			}
			return nil, fmt.Errorf("create pipe: %w", err)
		}
		pipes = append(pipes, [2]*os.File{r, w})
	}
	return pipes, nil
}

func closeFiles(files []*os.File) {
	for _, f := range files {
		f.Close()
	}
}

// wait is the one goroutine that waits for the process: it reaps it,
// SIGKILLs what is left of its cgroup (or, without one, of its process
// group), records how it ended and closes exited.
func (p *proc) wait(cmd *exec.Cmd) {
	err := cmd.Wait()
	p.reaped = time.Now()
	if p.leaf == nil {
		_ = signalGroup(p.pid, syscall.SIGKILL)
	}
	if st := cmd.ProcessState; st != nil {
		p.exit, p.code = st.String(), st.ExitCode()
		if ws, ok := st.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			p.signal = unix.SignalName(ws.Signal())
			// The kernel counts an OOM kill as it sends the SIGKILL, long before
			// the victim can exit and be reaped.
			p.oomRose = ws.Signal() == syscall.SIGKILL && p.oomBase >= 0 && p.oomCount() > p.oomBase
		}
	} else {
		p.exit, p.code = err.Error(), -1
	}
	p.memPeak = -1
	if p.leaf != nil {
		p.memPeak = p.leaf.MemoryPeak()
		if n := p.oomCount() - p.oomBase; p.leaf.HasMemory() && p.oomBase >= 0 && n > 0 && !p.oomRose {
			p.descendantOOMs = n
		}
		// Every descendant, whatever session it made, then the leaf.
		p.cgErr = errors.Join(p.leaf.Kill(cgroupKillTimeout), p.leaf.Remove())
	}
	close(p.exited)
}

// oomCount returns the count of OOM kills that tells whether the process
// was OOM-killed: its cgroup's own where it has a memory cgroup, else the
// host's; -1 if unknown.
func (p *proc) oomCount() int64 {
	if p.leaf != nil && p.leaf.HasMemory() {
		return p.leaf.OOMKills()
	}
	return oomKills()
}

// startReaders starts the goroutines that read the process's stdout, stderr
// and, for a channel pool, its fd 4.
func (p *proc) startReaders(log *slog.Logger, output func(stream string, pid int, line string)) {
	p.readers = 2
	go func() {
		logOutput(log, p.readFiles[0], "stdout", p.pid, nil, output)
		p.readerDone <- struct{}{}
	}()
	go func() {
		logOutput(log, p.readFiles[1], "stderr", p.pid, p.stderr, output)
		p.readerDone <- struct{}{}
	}()
	if len(p.readFiles) < 3 {
		return
	}
	p.readers++
	p.msgs = make(chan workerLine)
	go func() {
		p.readMessages(log, p.readFiles[2])
		p.readerDone <- struct{}{}
	}()
}

// workerLine is one line of the worker's fd 4: a message, or a line over
// the channel's limit (tooLong), which the session settles, as only it
// knows the worker's jobs.
type workerLine struct {
	proto.Message
	tooLong *proto.LineTooLongError
}

// readMessages forwards the lines of the worker's fd 4 to msgs and closes
// msgs at its end. Lines that are not messages are logged and skipped,
// but those over the limit, which are forwarded.
func (p *proc) readMessages(log *slog.Logger, r *os.File) {
	defer close(p.msgs)
	pr := proto.NewReader(r, 0)
	for {
		m, err := pr.Read()
		var (
			syntax *proto.SyntaxError
			long   *proto.LineTooLongError
		)
		switch {
		case err == nil, errors.As(err, &long):
			select {
			case p.msgs <- workerLine{Message: m, tooLong: long}:
			case <-p.quit:
				return
			}
		case errors.As(err, &syntax):
			log.Warn("bad message from worker, ignored", "pid", p.pid, "err", err)
		default: // EOF, or closed by release
			return
		}
	}
}

// send writes m to the worker's fd 3. A worker that does not read it within
// timeout is wedged: send then fails with os.ErrDeadlineExceeded.
func (p *proc) send(m proto.Message, timeout time.Duration) error {
	b, err := proto.Append(nil, m)
	if err != nil {
		return err
	}
	return p.sendLines(b, string(m.Op), timeout)
}

// sendLines writes lines made by proto.Append to the worker's fd 3, as send
// does; what names them in an error.
func (p *proc) sendLines(lines []byte, what string, timeout time.Duration) error {
	if p.inClosed {
		return fmt.Errorf("proto: write %s: %w", what, os.ErrClosed)
	}
	if err := p.in.SetWriteDeadline(time.Now().Add(timeout)); err != nil {
		return err
	}
	return p.w.WriteLines(lines, what)
}

// closeInput closes the worker's fd 3: it reads EOF.
func (p *proc) closeInput() {
	if p.in != nil && !p.inClosed {
		p.in.Close()
		p.inClosed = true
	}
}

// terminate starts the stop of the process: SIGTERM to its group now, then
// (cmd.WaitDelay) SIGKILL if it has not exited after KillTimeout.
func (p *proc) terminate() {
	p.sentSIGKILL(time.Now().Add(p.waitDelay))
	p.cancel()
}

// kill sends SIGKILL to every process of the cgroup (or, without one, of
// the process group) now, unless the process was reaped already.
func (p *proc) kill() {
	select {
	case <-p.exited:
	default:
		p.sentSIGKILL(time.Now())
		if p.leaf != nil {
			p.leaf.Signal()
			return
		}
		_ = signalGroup(p.pid, syscall.SIGKILL)
	}
}

// sentSIGKILL records that this side SIGKILLs the process at t (or may:
// os/exec does it after WaitDelay unless the process exits first).
func (p *proc) sentSIGKILL(t time.Time) {
	if p.sigkillAt.IsZero() || t.Before(p.sigkillAt) {
		p.sigkillAt = t
	}
}

// oomKilled reports whether the kernel's OOM killer ended the process, as
// far as can be told cheaply: a SIGKILL ended it, this side sent none before
// it was reaped, and the count of OOM kills rose while it ran. With a
// memory cgroup of its own, that count is the cgroup's: precise but for an
// OOM kill of one of its descendants followed by a kill -9 of itself.
// Without, it is the host's: another process's OOM kill while it ran, with
// a SIGKILL from elsewhere (kill -9), passes for one too. Call it on the
// slot goroutine, after exited.
func (p *proc) oomKilled() bool {
	return p.oomRose && (p.sigkillAt.IsZero() || p.reaped.Before(p.sigkillAt))
}

// ended describes how the process ended, for the crash report of its job
// and its exit event: its exit, with oomNote if the OOM killer ended it.
// Call it on the slot goroutine, after exited.
func (p *proc) ended() (exit string, oom bool) {
	limited := p.leaf != nil && p.leaf.MemoryLimited()
	switch {
	case p.oomKilled() && limited:
		return p.exit + oomLimitNote, true
	case p.oomKilled():
		return p.exit + oomNote, true
	case p.descendantOOMs > 0 && limited:
		return fmt.Sprintf("%s (%d of its child processes out of memory: max_rss reached; the kernel's OOM killer)", p.exit, p.descendantOOMs), false
	case p.descendantOOMs > 0:
		return fmt.Sprintf("%s (%d of its child processes out of memory: the kernel's OOM killer)", p.exit, p.descendantOOMs), false
	}
	return p.exit, false
}

// release frees what is left of a process once it has exited: it gives the
// reader goroutines up to grace to reach EOF, then closes our ends of every
// pipe and waits for the readers to return. Call it once, after exited.
func (p *proc) release(grace time.Duration) {
	timer := time.NewTimer(grace)
	defer timer.Stop()
	for p.readers > 0 && p.awaitReader(timer.C) {
	}
	close(p.quit)
	closeFiles(p.readFiles)
	for p.readers > 0 {
		p.awaitReader(nil)
	}
	p.closeInput()
	p.cancel()
}

// awaitReader waits for one reader goroutine to return, or for timeout.
func (p *proc) awaitReader(timeout <-chan time.Time) bool {
	select {
	case <-p.readerDone:
		p.readers--
		return true
	case <-timeout:
		return false
	}
}

// signalGroup sends sig to the process group led by pid. A group that no
// longer exists yields os.ErrProcessDone.
func signalGroup(pid int, sig syscall.Signal) error {
	err := syscall.Kill(-pid, sig)
	if errors.Is(err, syscall.ESRCH) {
		return os.ErrProcessDone
	}
	return err
}
