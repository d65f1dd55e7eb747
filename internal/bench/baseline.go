package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
	"gopkg.in/yaml.v3"
)

// This file holds the BASELINE: a faithful, minimal stand-in for the old
// agents this project replaces (the Node redis-twemproxy-agent, smitty). It
// is not the product and shares no code with it. It does what they do:
//
//   - subscribe to +switch-master on ONE Sentinel;
//   - on an event, read the nutcracker YAML, replace the host:port of the
//     server named after the master, dump the YAML again (comments and key
//     order lost) and write it in place (truncate, write; no temp file, no
//     fsync);
//   - run the restart command through /bin/sh, as Node's child_process.exec
//     does, with a plain kill-and-start script: no wait for the old process,
//     no validation, no probe, no rollback.
//
// The brief measured it at about 20 ms here; the benchmark measures it
// the same way as the agent, in the same run.

// baseline is one running old-style agent.
type baseline struct {
	sentinel string // the one Sentinel it listens to
	config   string // nutcracker YAML it rewrites
	restart  string // the script it runs through /bin/sh -c

	mu       sync.Mutex
	restarts int
	errs     []string
}

// run follows the Sentinel until ctx ends. Events are handled one at a time,
// in arrival order, like the old agents' event loop.
func (b *baseline) run(ctx context.Context, ready chan<- error) {
	cl := redis.NewClient(&redis.Options{Addr: b.sentinel, Protocol: 2, DisableIdentity: true, DialTimeout: time.Second})
	defer cl.Close()
	ps := cl.Subscribe(ctx, "+switch-master")
	defer ps.Close()
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	_, err := ps.Receive(rctx)
	cancel()
	ready <- err
	if err != nil {
		return
	}
	stop := context.AfterFunc(ctx, func() { ps.Close() })
	defer stop()
	for range maxMessages {
		if ctx.Err() != nil {
			return
		}
		msg, err := ps.ReceiveMessage(ctx)
		if err != nil {
			sleep(ctx, 50*time.Millisecond)
			continue
		}
		f := strings.Fields(msg.Payload) // name old-ip old-port new-ip new-port
		if len(f) != 5 {
			continue
		}
		if err := b.apply(ctx, f[0], net.JoinHostPort(f[3], f[4])); err != nil {
			b.mu.Lock()
			b.errs = append(b.errs, err.Error())
			b.mu.Unlock()
		}
	}
}

// apply is the whole reaction of the old agents to one event.
func (b *baseline) apply(ctx context.Context, name, newAddr string) error {
	src, err := os.ReadFile(b.config)
	if err != nil {
		return err
	}
	var pools map[string]map[string]any
	if err := yaml.Unmarshal(src, &pools); err != nil {
		return err
	}
	changed := false
	for _, pool := range pools {
		servers, _ := pool["servers"].([]any)
		for i, s := range servers {
			str, _ := s.(string)
			// "host:port:weight name"
			addrWeight, server, ok := strings.Cut(str, " ")
			if !ok || server != name {
				continue
			}
			weight := addrWeight[strings.LastIndexByte(addrWeight, ':')+1:]
			servers[i] = newAddr + ":" + weight + " " + server
			changed = true
		}
	}
	if !changed {
		return nil
	}
	out, err := yaml.Marshal(pools)
	if err != nil {
		return err
	}
	if err := os.WriteFile(b.config, out, 0o644); err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", b.restart)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("restart: %v: %s", err, out)
	}
	b.mu.Lock()
	b.restarts++
	b.mu.Unlock()
	return nil
}

// daemonProxy is a nutcracker that runs as a daemon (-d, with a pid file),
// started and restarted by a shell script: the baseline's proxy, and the
// agent's proxy in restart mode "command".
type daemonProxy struct {
	dir     string
	conf    string
	pidfile string
	script  string
}

// Restart scripts. Both end by exec'ing nutcracker -d, which forks, so the
// script returns before the daemon has bound its ports.
const (
	// killAndStart is the old agents' restart script: kill, start at once.
	// When the old process still holds the port, the new one fails to bind
	// and exits, and nothing notices.
	killAndStart = `#!/bin/sh
# restart nutcracker the old way: kill it and start it again, nothing else.
kill $(cat %[1]s 2>/dev/null) 2>/dev/null
exec %[2]s -d -c %[3]s -p %[1]s -o %[4]s -s %[5]d -a %[6]s
`
	// stopWaitStart is what an init system does for `restart`: stop, wait
	// until the process has exited, start. A zombie (state Z) has exited
	// already: PID 1 on these machines reaps slowly. The wait is bounded.
	stopWaitStart = `#!/bin/sh
# restart nutcracker like an init system: stop, wait for the exit, start.
if [ -r %[1]s ]; then
  read -r pid < %[1]s
  if [ -n "$pid" ] && kill "$pid" 2>/dev/null; then
    i=0
    while [ $i -lt 20000 ] && [ -r /proc/$pid/stat ]; do
      read -r _ _ st _ 2>/dev/null < /proc/$pid/stat || break
      [ "$st" = Z ] && break
      i=$((i+1))
    done
  fi
fi
exec %[2]s -d -c %[3]s -p %[1]s -o %[4]s -s %[5]d -a %[6]s
`
)

// newDaemonProxy writes the config and the restart script into dir.
func newDaemonProxy(dir, nutcracker, config, script, statsIP string, statsPort int) (*daemonProxy, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	d := &daemonProxy{
		dir: dir, conf: filepath.Join(dir, "nutcracker.yml"),
		pidfile: filepath.Join(dir, "nutcracker.pid"), script: filepath.Join(dir, "restart.sh"),
	}
	if err := os.WriteFile(d.conf, []byte(config), 0o644); err != nil {
		return nil, err
	}
	text := fmt.Sprintf(script, shQuote(d.pidfile), shQuote(nutcracker), shQuote(d.conf),
		shQuote(filepath.Join(dir, "nutcracker.log")), statsPort, statsIP)
	if err := os.WriteFile(d.script, []byte(text), 0o755); err != nil {
		return nil, err
	}
	return d, nil
}

// start runs the script once (nothing to kill yet) and waits for listen.
func (d *daemonProxy) start(ctx context.Context, listen string) error {
	if out, err := exec.CommandContext(ctx, "/bin/sh", d.script).CombinedOutput(); err != nil {
		return fmt.Errorf("start nutcracker with %s: %v: %s", d.script, err, out)
	}
	return waitListening(ctx, listen, 10*time.Second)
}

// kill SIGKILLs every nutcracker this proxy's script started that still
// runs: the processes whose command line names this proxy's config file,
// which lives in the benchmark's own directory.
func (d *daemonProxy) kill() {
	for _, pid := range pidsWithArg(d.conf) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}

// pidsWithArg lists the processes with arg in their command line.
func pidsWithArg(arg string) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		for _, a := range strings.Split(string(b), "\x00") {
			if a == arg {
				out = append(out, pid)
				break
			}
		}
	}
	return out
}

func shQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// waitListening waits until addr accepts TCP connections.
func waitListening(ctx context.Context, addr string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for range int(timeout/(5*time.Millisecond)) + 1 {
		if ctx.Err() != nil {
			break
		}
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", addr)
		if err == nil {
			c.Close()
			return nil
		}
		last = err
		sleep(ctx, 5*time.Millisecond)
	}
	return errors.Join(fmt.Errorf("%s does not accept connections after %s", addr, timeout), last)
}
