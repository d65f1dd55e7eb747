package sandbox

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Process is one child the cluster supervises. The harness always waits on its
// own child (cmd.Wait), never on kill -0: PID 1 here reaps zombies slowly.
type Process struct {
	c        *Cluster
	name     string
	dir      string
	logPath  string
	argv     []string
	env      []string
	ip       string
	ports    []int
	udpPorts []int
	ready    func(ctx context.Context) error

	mu      sync.Mutex
	cmd     *exec.Cmd
	exited  chan struct{}
	waitErr error
}

// Name is the process's unique name in its cluster (e.g. "redis-2").
func (p *Process) Name() string { return p.name }

// Dir holds the process's config, data and log.
func (p *Process) Dir() string { return p.dir }

// LogPath is the file that captures the process's stdout and stderr.
func (p *Process) LogPath() string { return p.logPath }

// IP is the loopback "host" the process listens on ("" if none).
func (p *Process) IP() string { return p.ip }

// Port is the process's main port (0 if none).
func (p *Process) Port() int {
	if len(p.ports) == 0 {
		return 0
	}
	return p.ports[0]
}

// Addr is IP:Port, or "" when the process has no main port.
func (p *Process) Addr() string {
	if p.ip == "" || len(p.ports) == 0 {
		return ""
	}
	return net.JoinHostPort(p.ip, strconv.Itoa(p.ports[0]))
}

// Argv is the command line the process runs with.
func (p *Process) Argv() []string { return append([]string(nil), p.argv...) }

// Pid is the current (or last) child's process ID, 0 before the first start.
func (p *Process) Pid() int {
	cmd, _ := p.current()
	if cmd == nil || cmd.Process == nil {
		return 0
	}
	return cmd.Process.Pid
}

// Exited is closed when the current run of the process ends; each start makes
// a fresh channel, so take it after the start you mean to watch.
func (p *Process) Exited() <-chan struct{} {
	_, ch := p.current()
	return ch
}

// ExitErr is the result of cmd.Wait for the last run (nil while running).
func (p *Process) ExitErr() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.waitErr
}

// Alive reports whether the current run has not exited yet.
func (p *Process) Alive() bool {
	_, ch := p.current()
	if ch == nil {
		return false
	}
	select {
	case <-ch:
		return false
	default:
		return true
	}
}

func (p *Process) current() (*exec.Cmd, chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cmd, p.exited
}

// start launches the child in its own process group, with its output appended
// to the log, and a goroutine that waits for it and closes the exit channel.
func (p *Process) start() error {
	f, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("open log of %s: %w", p.name, err)
	}
	fmt.Fprintf(f, "--- harness %s: start %s\n", time.Now().Format(time.RFC3339Nano), strings.Join(p.argv, " "))
	cmd := exec.Command(p.argv[0], p.argv[1:]...)
	cmd.Dir = p.dir
	cmd.Env = append(os.Environ(), p.env...)
	cmd.Stdout, cmd.Stderr = f, f
	// Pdeathsig: the child dies with the test binary even if Close never runs.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	// Holding the cluster lock across the spawn means Close either sees this
	// child or refuses it.
	p.c.mu.Lock()
	if p.c.closed {
		p.c.mu.Unlock()
		f.Close()
		return fmt.Errorf("start %s: cluster closed", p.name)
	}
	if err := cmd.Start(); err != nil {
		p.c.mu.Unlock()
		f.Close()
		return fmt.Errorf("start %s: %w", p.name, err)
	}
	exited := make(chan struct{})
	p.mu.Lock()
	p.cmd, p.exited, p.waitErr = cmd, exited, nil
	p.mu.Unlock()
	p.c.mu.Unlock()
	go func() {
		err := cmd.Wait()
		fmt.Fprintf(f, "--- harness %s: exited: %v\n", time.Now().Format(time.RFC3339Nano), cmd.ProcessState)
		f.Close()
		p.mu.Lock()
		p.waitErr = err
		p.mu.Unlock()
		close(exited)
	}()
	return nil
}

// waitReady polls the readiness check (or, without one, a TCP connect to the
// main address) until it passes, the process exits or StartTimeout passes.
func (p *Process) waitReady() error {
	ready := p.ready
	if ready == nil && p.Addr() != "" {
		ready = func(ctx context.Context) error { return dialTCP(ctx, p.Addr()) }
	}
	if ready == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), p.c.opts.StartTimeout)
	defer cancel()
	exited := p.Exited()
	t := time.NewTicker(25 * time.Millisecond)
	defer t.Stop()
	for {
		err := ready(ctx)
		if err == nil {
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("%s exited while starting (%v); log %s:\n%s", p.name, p.ExitErr(), p.logPath, tail(p.logPath, 30))
		case <-ctx.Done():
			return fmt.Errorf("%s not ready after %s: %v; log %s:\n%s", p.name, p.c.opts.StartTimeout, err, p.logPath, tail(p.logPath, 30))
		case <-t.C:
		}
	}
}

func dialTCP(ctx context.Context, addr string) error {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	return conn.Close()
}

// signal sends sig to the current child itself (not its group).
func (p *Process) signal(sig syscall.Signal) error {
	cmd, _ := p.current()
	if cmd == nil || !p.Alive() {
		return fmt.Errorf("signal %s: %s is not running", sig, p.name)
	}
	if err := cmd.Process.Signal(sig); err != nil {
		return fmt.Errorf("signal %s to %s: %w", sig, p.name, err)
	}
	return nil
}

// Kill sends SIGKILL and waits until the child has been reaped. Killing a
// process that is not running is not an error.
func (p *Process) Kill() error {
	cmd, exited := p.current()
	if cmd == nil || !p.Alive() {
		return nil
	}
	_ = cmd.Process.Kill()
	<-exited
	return nil
}

// Stop sends SIGTERM (and SIGCONT, in case it is paused), waits StopTimeout for
// the exit, then SIGKILLs. Stopping a process that is not running is a no-op.
func (p *Process) Stop() error {
	cmd, exited := p.current()
	if cmd == nil || !p.Alive() {
		return nil
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	_ = cmd.Process.Signal(syscall.SIGCONT)
	select {
	case <-exited:
		return nil
	case <-time.After(p.c.opts.StopTimeout):
	}
	_ = cmd.Process.Kill()
	<-exited
	return fmt.Errorf("stop %s: no exit %s after SIGTERM, killed", p.name, p.c.opts.StopTimeout)
}

// Pause freezes the process with SIGSTOP: it holds its sockets but answers nothing.
func (p *Process) Pause() error { return p.signal(syscall.SIGSTOP) }

// Resume continues a paused process with SIGCONT.
func (p *Process) Resume() error { return p.signal(syscall.SIGCONT) }

// Restart stops the process if it runs, waits until its ports are free, starts
// it again with the same arguments and ports, and waits until it is ready.
func (p *Process) Restart() error {
	_ = p.Stop() // a process that needed SIGKILL is gone all the same
	ctx, cancel := context.WithTimeout(context.Background(), p.c.opts.StartTimeout)
	defer cancel()
	err := poll(ctx, p.name+" ports to be free", func(context.Context) error {
		for _, port := range p.ports {
			if !portFree(p.ip, port, false) {
				return fmt.Errorf("tcp %s:%d busy", p.ip, port)
			}
		}
		for _, port := range p.udpPorts {
			if !portFree(p.ip, port, true) {
				return fmt.Errorf("udp %s:%d busy", p.ip, port)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	if err := p.start(); err != nil {
		return err
	}
	return p.waitReady()
}

// teardown SIGKILLs the whole process group (the child and anything it left
// behind in its group) and waits for the child.
func (p *Process) teardown() {
	cmd, exited := p.current()
	if cmd == nil || cmd.Process == nil {
		return
	}
	signalGroup(cmd.Process.Pid, syscall.SIGKILL)
	_ = cmd.Process.Kill()
	<-exited
}
