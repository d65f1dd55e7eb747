package twemproxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
)

// Proxy makes a running twemproxy load the config file that is on disk. The
// runner restarts it after a rewrite and stops it on shutdown; tests use a
// fake.
type Proxy interface {
	// Restart returns once the new process has been started (or the
	// restart command has finished); the runner probes readiness itself.
	Restart(ctx context.Context) error
	// Stop is called once, on shutdown.
	Stop(ctx context.Context) error
}

// childWatcher is implemented by proxies that own the nutcracker process and
// so know when it dies; the runner then restarts it.
type childWatcher interface {
	// Exited is closed when the current child exits; nil before the first
	// start.
	Exited() <-chan struct{}
	// Started is when the current (or last) child was started.
	Started() time.Time
	// ExitError is the wait status of the last child that exited.
	ExitError() error
	// Output is the last lines the child printed, for error reports.
	Output() string
	// PID is the current child's process ID, 0 when none runs.
	PID() int
}

// SupervisorOptions configure a Supervisor.
type SupervisorOptions struct {
	// Argv runs nutcracker in the foreground (never with -d: a daemon is
	// not our child and cannot be waited for).
	Argv []string
	Dir  string   // working directory; empty: the agent's
	Env  []string // added to the agent's environment
	// StopTimeout is how long Stop and Restart wait after SIGTERM before
	// SIGKILL (default 5s).
	StopTimeout time.Duration
	// Logger receives the child's output, line by line, at debug level.
	Logger hclog.Logger
}

// Supervisor runs nutcracker as the agent's child (restart mode
// "supervise"). Owning the process lets a restart start the new child the
// moment the old one has exited, which is the whole blackout, and lets the
// runner notice a crash at once. Safe for concurrent use.
type Supervisor struct {
	o   SupervisorOptions
	log hclog.Logger
	out *tailBuffer

	mu      sync.Mutex
	cmd     *exec.Cmd
	exited  chan struct{} // fresh per start, closed by the waiter
	waitErr error
	started time.Time
}

// NewSupervisor checks the options; nothing starts until Restart.
func NewSupervisor(o SupervisorOptions) (*Supervisor, error) {
	if len(o.Argv) == 0 {
		return nil, errors.New("supervisor: empty command")
	}
	for _, a := range o.Argv[1:] {
		if a == "-d" || a == "--daemonize" {
			return nil, fmt.Errorf("supervisor: %q daemonizes nutcracker, which then cannot be supervised; drop it", a)
		}
	}
	// Resolve the binary once: a restart is on the failover's critical
	// path, and a missing binary is better reported now.
	bin, err := exec.LookPath(o.Argv[0])
	if err != nil {
		return nil, fmt.Errorf("supervisor: %w", err)
	}
	o.Argv = append([]string{bin}, o.Argv[1:]...)
	if o.StopTimeout <= 0 {
		o.StopTimeout = 5 * time.Second
	}
	if o.Logger == nil {
		o.Logger = hclog.NewNullLogger()
	}
	return &Supervisor{o: o, log: o.Logger, out: &tailBuffer{max: 30}}, nil
}

// Restart stops the running child (SIGTERM, wait, SIGKILL after
// StopTimeout) and starts a new one at once.
func (s *Supervisor) Restart(ctx context.Context) error {
	if err := s.Stop(ctx); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		// Shutting down: do not leave a new child behind.
		return fmt.Errorf("restart nutcracker: %w", err)
	}
	return s.start()
}

// Stop ends the current child, if any: SIGTERM, then wait for cmd.Wait (not
// kill -0, which a slow PID 1 fools), then SIGKILL to its process group
// after StopTimeout or when ctx ends.
func (s *Supervisor) Stop(ctx context.Context) error {
	s.mu.Lock()
	cmd, exited := s.cmd, s.exited
	s.mu.Unlock()
	if cmd == nil {
		return nil
	}
	select {
	case <-exited:
		return nil
	default:
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(s.o.StopTimeout)
	defer t.Stop()
	select {
	case <-exited:
		return nil
	case <-t.C:
	case <-ctx.Done():
	}
	s.log.Warn("nutcracker ignored SIGTERM, killing it", "pid", cmd.Process.Pid, "after", s.o.StopTimeout)
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	_ = cmd.Process.Kill()
	<-exited
	return nil
}

// start launches a child in its own process group with its output captured
// through a pipe, so cmd.Wait returns when the process exits rather than
// when its output has been copied.
func (s *Supervisor) start() error {
	r, w, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("start nutcracker: %w", err)
	}
	cmd := exec.Command(s.o.Argv[0], s.o.Argv[1:]...)
	cmd.Dir = s.o.Dir
	if len(s.o.Env) > 0 {
		cmd.Env = append(os.Environ(), s.o.Env...)
	}
	cmd.Stdout, cmd.Stderr = w, w
	// Own process group: a terminal's Ctrl-C reaches the agent, which stops
	// the child in order. Pdeathsig: a killed agent does not leave an
	// unmanaged proxy holding the ports its successor needs.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := cmd.Start(); err != nil {
		r.Close()
		w.Close()
		return fmt.Errorf("start %s: %w", s.o.Argv[0], err)
	}
	w.Close()
	exited := make(chan struct{})
	s.cmd, s.exited, s.waitErr, s.started = cmd, exited, nil, time.Now()
	s.out.reset()
	pid := cmd.Process.Pid
	go s.copyOutput(r, pid)
	go func() {
		err := cmd.Wait()
		s.mu.Lock()
		s.waitErr = err
		s.mu.Unlock()
		close(exited)
	}()
	s.log.Debug("nutcracker started", "pid", pid)
	return nil
}

func (s *Supervisor) copyOutput(r *os.File, pid int) {
	defer r.Close()
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), 64*1024)
	for sc.Scan() {
		line := sc.Text()
		s.out.add(line)
		s.log.Debug(line, "pid", pid)
	}
}

// Exited is closed when the current child exits; nil before the first start.
func (s *Supervisor) Exited() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.exited == nil {
		return nil
	}
	return s.exited
}

// ExitError is the cmd.Wait result of the last child that exited.
func (s *Supervisor) ExitError() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.waitErr
}

// PID is the current child's process ID, 0 when none runs.
func (s *Supervisor) PID() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil || !open(s.exited) {
		return 0
	}
	return s.cmd.Process.Pid
}

// Started is when the current (or last) child was started.
func (s *Supervisor) Started() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.started
}

// Output is the last lines the child printed.
func (s *Supervisor) Output() string { return s.out.String() }

func open(ch chan struct{}) bool {
	select {
	case <-ch:
		return false
	default:
		return true
	}
}

// tailBuffer keeps the last max lines written to it.
type tailBuffer struct {
	mu    sync.Mutex
	max   int
	lines []string
}

func (t *tailBuffer) add(line string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.lines = append(t.lines, line)
	if len(t.lines) > t.max {
		t.lines = t.lines[len(t.lines)-t.max:]
	}
}

func (t *tailBuffer) reset() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.lines = nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.Join(t.lines, "\n")
}

// CommandRestarter restarts twemproxy with an operator's command (restart
// mode "command"), e.g. [systemctl, restart, nutcracker]. The command runs as
// argv, never through a shell, in its own process group that is killed when
// Timeout passes.
type CommandRestarter struct {
	Argv    []string
	Timeout time.Duration // default 10s
	Dir     string
	Env     []string
}

// Restart runs the command and returns its output in the error when it
// fails or times out.
func (c *CommandRestarter) Restart(ctx context.Context) error {
	if len(c.Argv) == 0 {
		return errors.New("restart command: empty argv")
	}
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.Argv[0], c.Argv[1:]...)
	cmd.Dir = c.Dir
	if len(c.Env) > 0 {
		cmd.Env = append(os.Environ(), c.Env...)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = time.Second
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if err == nil {
		return nil
	}
	text := strings.TrimSpace(out.String())
	if len(text) > 2000 {
		text = "..." + text[len(text)-2000:]
	}
	if ctx.Err() == context.DeadlineExceeded {
		return fmt.Errorf("restart command %q: no exit after %s, killed: %s", strings.Join(c.Argv, " "), timeout, text)
	}
	return fmt.Errorf("restart command %q: %w: %s", strings.Join(c.Argv, " "), err, text)
}

// Stop does nothing: the proxy belongs to whatever runs the command.
func (c *CommandRestarter) Stop(context.Context) error { return nil }
