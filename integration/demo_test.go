package integration

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/seed42ef8afe/redis-consul-agent/agent/demo"
	"github.com/seed42ef8afe/redis-consul-agent/integration/harness"
	"github.com/seed42ef8afe/redis-consul-agent/internal/sandbox"
)

// TestDemo runs what `make demo` runs and checks that its guide tells the
// truth: the addresses it prints answer, every command it prints works as
// printed (run as argv, in order, ending with the failover and the kill), and
// each well-known address is either the one used or named as taken. The
// subtest takes Consul's 8500 first and checks the fallback.
func TestDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the whole demo stack")
	}
	bin, err := harness.AgentBinary()
	if err != nil {
		t.Fatal(err)
	}
	t.Run("well-known", func(t *testing.T) {
		free := freeWellKnown()
		st := runDemo(t, bin, false)
		for _, f := range st.Fallbacks {
			for _, addr := range free {
				if strings.Contains(f, addr+" is taken") {
					t.Errorf("%s was free before the demo started, yet: %s", addr, f)
				}
			}
		}
	})
	t.Run("8500-taken", func(t *testing.T) {
		if l, err := net.Listen("tcp", "127.0.0.1:8500"); err == nil {
			defer l.Close()
		} // else someone else holds it: the demo must fall back all the same
		runDemo(t, bin, true)
	})
}

// freeWellKnown lists the well-known addresses nobody holds now.
func freeWellKnown() []string {
	var free []string
	for _, port := range []int{demo.ConsulHTTPPort, demo.ConsulDNSPort, demo.DashboardPort, demo.ProxyPort} {
		addr := net.JoinHostPort(demo.WellKnownIP, strconv.Itoa(port))
		if l, err := net.Listen("tcp", addr); err == nil {
			l.Close()
			free = append(free, addr)
		}
	}
	return free
}

// runDemo runs the demo in process, checks its guide and returns the stack
// it ran (stopped by then).
func runDemo(t *testing.T, bin string, consulTaken bool) *demo.Stack {
	var out bytes.Buffer
	var checked *demo.Stack
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	start := time.Now()
	err := demo.Run(ctx, demo.Options{Agent: bin, Dir: t.TempDir(), Out: &out, Ready: func(st *demo.Stack) {
		checked = st
		t.Logf("demo running after %.1fs; fallbacks: %q", time.Since(start).Seconds(), st.Fallbacks)
		g := out.String()
		checkWellKnown(t, st, g)
		if consulTaken {
			if st.Consul.HTTPPort == demo.ConsulHTTPPort {
				t.Errorf("Consul HTTP on %s although 8500 was taken", st.Consul.HTTPAddr())
			}
			if !strings.Contains(g, "note: Consul HTTP: 127.0.0.1:8500 is taken, using "+st.Consul.HTTPAddr()) {
				t.Errorf("the guide does not say 8500 was taken:\n%s", g)
			}
		}
		checkPrintedAddrs(ctx, t, st, g)
		cmds := guideCommands(g)
		if len(cmds) < 10 {
			t.Fatalf("only %d commands in the guide:\n%s", len(cmds), g)
		}
		for _, argv := range cmds {
			if err := checkCommand(ctx, st, argv); err != nil {
				t.Errorf("guide command %q: %v", strings.Join(argv, " "), err)
			}
		}
	}})
	if err != nil {
		t.Fatalf("demo: %v\n%s", err, out.String())
	}
	if checked == nil {
		t.Fatal("the demo never became ready")
	}
	if t.Failed() {
		t.Logf("demo output:\n%s", out.String())
	}
	return checked
}

// checkWellKnown asserts each well-known address is used or named as taken.
func checkWellKnown(t *testing.T, st *demo.Stack, g string) {
	t.Helper()
	for _, w := range []struct {
		what, used string
		port       int
	}{
		{"Consul HTTP", st.Consul.HTTPAddr(), demo.ConsulHTTPPort},
		{"Consul DNS", st.Consul.DNSAddr(), demo.ConsulDNSPort},
		{"the dashboard", strings.TrimSuffix(strings.TrimPrefix(st.Dashboard, "http://"), "/"), demo.DashboardPort},
		{"twemproxy", st.Proxy, demo.ProxyPort},
	} {
		want := net.JoinHostPort(demo.WellKnownIP, strconv.Itoa(w.port))
		note := fmt.Sprintf("note: %s: %s is taken, using %s", w.what, want, w.used)
		if w.used != want && !strings.Contains(g, note) {
			t.Errorf("%s is on %s, not %s, and the guide does not say why (want %q)", w.what, w.used, want, note)
		}
	}
}

// checkPrintedAddrs reads the address table at the top of the guide and
// checks each one answers: dashboard and Consul UI over HTTP, Consul DNS with
// the master, twemproxy with a write that lands on the master.
func checkPrintedAddrs(ctx context.Context, t *testing.T, st *demo.Stack, g string) {
	t.Helper()
	field := func(label string) string {
		for _, l := range strings.Split(g, "\n") {
			if rest, ok := strings.CutPrefix(strings.TrimSpace(l), label+" "); ok {
				return strings.Fields(rest)[0]
			}
		}
		t.Fatalf("no %q line in the guide:\n%s", label, g)
		return ""
	}
	for _, label := range []string{"Dashboard", "Consul UI"} {
		url := field(label)
		if err := sandbox.Poll(ctx, label+" at "+url, func(ctx context.Context) error { return sandbox.HTTPOK(ctx, url) }); err != nil {
			t.Error(err)
		}
	}
	dns := field("Consul DNS")
	if dns != st.Consul.DNSAddr() {
		t.Errorf("the guide prints Consul DNS %s, Consul serves DNS on %s", dns, st.Consul.DNSAddr())
	}
	proxy := field("twemproxy")
	if err := sandbox.Poll(ctx, "write through twemproxy at "+proxy, func(ctx context.Context) error {
		_, err := sandbox.Do(ctx, proxy, "SET", "demo", "ok")
		return err
	}); err != nil {
		t.Error(err)
	}
	if v, err := st.Shard.Master.Client().Get(ctx, "demo").Result(); err != nil || v != "ok" {
		t.Errorf("the write through twemproxy did not land on the master: %q, %v", v, err)
	}
}

// guideCommands returns the guide's commands as argv, in printed order.
func guideCommands(g string) [][]string {
	var cmds [][]string
	for _, l := range strings.Split(g, "\n") {
		if rest, ok := strings.CutPrefix(l, demo.CommandPrefix); ok {
			cmds = append(cmds, strings.Split(rest, " "))
		}
	}
	return cmds
}

// checkCommand runs one printed command and checks it did what the guide
// says. A command the test does not know fails: a new command needs a check.
func checkCommand(ctx context.Context, st *demo.Stack, argv []string) error {
	switch name := filepath.Base(argv[0]); {
	case name == "dig":
		return checkDig(ctx, st, argv)
	case name == "consul" && slices.Contains(argv, "members"):
		return expectOutput(ctx, argv, st.Consul.NodeName(), "alive")
	case name == "consul" && slices.Contains(argv, "catalog"):
		return expectOutput(ctx, argv, "redis", "redis-sentinel", "twemproxy")
	case name == "redis-consul-agent" && slices.Contains(argv, "status"):
		return expectOutput(ctx, argv, st.Shard.Name, st.Shard.Master.Addr())
	case name == "redis-cli" && slices.Contains(argv, "failover"):
		return checkFailover(ctx, st, argv)
	case name == "redis-cli" && slices.Contains(argv, "set"):
		return expectOutput(ctx, argv, "OK")
	case name == "kill":
		if argv[2] != strconv.Itoa(st.Shard.Master.Pid()) {
			return fmt.Errorf("pid %s is not the master's (%d)", argv[2], st.Shard.Master.Pid())
		}
		if err := expectOutput(ctx, argv); err != nil {
			return err
		}
		select {
		case <-st.Shard.Master.Exited():
			return nil
		case <-time.After(10 * time.Second):
			return fmt.Errorf("redis-server %s still runs 10s after", st.Shard.Master.Addr())
		}
	}
	return fmt.Errorf("no check for this command")
}

// checkDig polls the printed dig until it answers what the stack holds.
func checkDig(ctx context.Context, st *demo.Stack, argv []string) error {
	var want []string
	i := slices.IndexFunc(argv, func(a string) bool { return strings.HasSuffix(a, ".consul") })
	if i < 0 {
		return fmt.Errorf("no .consul name to ask")
	}
	switch name := argv[i]; name {
	case "master.redis.service.consul", st.Shard.Name + "-master.redis.service.consul":
		want = []string{st.Shard.Master.IP()}
	case "replica.redis.service.consul":
		for _, r := range st.Shard.Replicas {
			want = append(want, r.IP())
		}
	case "twemproxy.service.consul":
		_, port, _ := net.SplitHostPort(st.Proxy)
		want = []string{"1 1 " + port + " "} // priority weight port target
	default:
		return fmt.Errorf("no expected answer for %s", name)
	}
	return pollDig(ctx, argv, want)
}

// pollDig runs dig until its answer holds exactly the wanted lines (each
// given as a prefix), for up to 30s.
func pollDig(ctx context.Context, argv, want []string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return sandbox.Poll(ctx, strings.Join(argv, " "), func(ctx context.Context) error {
		out, err := run(ctx, argv)
		if err != nil {
			return err
		}
		var got []string
		for _, l := range strings.Split(out, "\n") {
			if l = strings.TrimSpace(l); l != "" {
				got = append(got, l)
			}
		}
		if len(got) != len(want) {
			return fmt.Errorf("answer %q, want %q", got, want)
		}
		for _, w := range want {
			if !slices.ContainsFunc(got, func(g string) bool { return strings.HasPrefix(g, w) }) {
				return fmt.Errorf("answer %q, want %q", got, want)
			}
		}
		return nil
	})
}

// checkFailover runs the printed `sentinel failover` and waits until the
// printed dig names the new master.
func checkFailover(ctx context.Context, st *demo.Stack, argv []string) error {
	old := st.Shard.Master.Addr()
	if err := expectOutput(ctx, argv, "OK"); err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	now, err := st.Shard.WaitFailover(wctx, old)
	if err != nil {
		return err
	}
	host, _, _ := net.SplitHostPort(now)
	dns := st.Consul.DNSAddr()
	h, p, _ := net.SplitHostPort(dns)
	return pollDig(ctx, []string{"dig", "@" + h, "-p", p, "master.redis.service.consul", "+short"}, []string{host})
}

// expectOutput runs argv (20s at most) and wants exit 0 and every string in
// its output.
func expectOutput(ctx context.Context, argv []string, want ...string) error {
	out, err := run(ctx, argv)
	if err != nil {
		return err
	}
	for _, w := range want {
		if !strings.Contains(out, w) {
			return fmt.Errorf("output lacks %q:\n%s", w, out)
		}
	}
	return nil
}

func run(ctx context.Context, argv []string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	b, err := exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		return string(b), fmt.Errorf("%w: %s", err, b)
	}
	return string(b), nil
}

// TestDemoCleanupWithBrokenPipe runs the real binary's `demo` the way
// `make demo | tee log` does when Ctrl-C kills tee too: stdout is a pipe whose
// reader is closed before SIGINT, so the demo's goodbye hits EPIPE. The demo
// must still tear down: exit 0, nothing left in its TMPDIR, no process it
// started (children and grandchildren) alive.
func TestDemoCleanupWithBrokenPipe(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the whole demo stack")
	}
	bin, err := harness.AgentBinary()
	if err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd := exec.Command(bin, "demo")
	cmd.Env = append(os.Environ(), "TMPDIR="+tmp)
	cmd.Stdout, cmd.Stderr = w, &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	killed := false
	defer func() {
		if !killed {
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-exited
		}
	}()

	guide := readUntil(t, r, "Press Ctrl-C", 3*time.Minute)
	procs := descendants(cmd.Process.Pid)
	if len(procs) < 10 {
		t.Fatalf("the demo runs %d processes, want Consul, 3 Redis, 3 Sentinels, 4 agents, nutcracker:\n%s", len(procs), guide)
	}
	if dirs, _ := filepath.Glob(filepath.Join(tmp, "rca-demo-*")); len(dirs) != 1 {
		t.Fatalf("demo directories in TMPDIR while running: %v, want one", dirs)
	}
	r.Close() // tee is gone
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		killed = true
		if err != nil {
			t.Errorf("demo exited with %v after SIGINT, want 0; stderr:\n%s", err, stderr.String())
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("demo still running 60s after SIGINT; stderr:\n%s", stderr.String())
	}
	if left, _ := os.ReadDir(tmp); len(left) > 0 {
		t.Errorf("left in TMPDIR after Ctrl-C: %v", names(left))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := sandbox.Poll(ctx, "every process of the demo to be gone", func(context.Context) error {
		var alive []string
		for _, p := range procs {
			if p.alive() {
				alive = append(alive, p.String())
			}
		}
		if len(alive) > 0 {
			return fmt.Errorf("still running: %v", alive)
		}
		return nil
	}); err != nil {
		t.Error(err)
	}
}

// readUntil reads lines from r until one contains marker, within d.
func readUntil(t *testing.T, r *os.File, marker string, d time.Duration) string {
	t.Helper()
	found := make(chan string, 1)
	go func() {
		var b strings.Builder
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			b.WriteString(sc.Text() + "\n")
			if strings.Contains(sc.Text(), marker) {
				found <- b.String()
				return
			}
		}
		found <- b.String() + "(stdout closed)"
	}()
	select {
	case s := <-found:
		if !strings.Contains(s, marker) {
			t.Fatalf("the demo never printed %q:\n%s", marker, s)
		}
		return s
	case <-time.After(d):
		t.Fatalf("the demo did not print %q within %s", marker, d)
		return ""
	}
}

// proc is a process identified by PID and start time, so a reused PID is
// not taken for a survivor.
type proc struct {
	pid   int
	start string
	cmd   string
}

func (p proc) String() string { return fmt.Sprintf("%d %s", p.pid, p.cmd) }

// alive reports whether the process still runs (a zombie does not).
func (p proc) alive() bool {
	state, start, _, ok := procStat(p.pid)
	return ok && start == p.start && state != "Z" && state != "X"
}

// descendants lists every process below pid, from /proc.
func descendants(root int) []proc {
	entries, _ := os.ReadDir("/proc")
	children := map[int][]proc{}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		_, start, ppid, ok := procStat(pid)
		if !ok {
			continue
		}
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		children[ppid] = append(children[ppid], proc{pid: pid, start: start, cmd: strings.ReplaceAll(string(cmdline), "\x00", " ")})
	}
	var out []proc
	queue := []int{root}
	for len(queue) > 0 {
		for _, c := range children[queue[0]] {
			out = append(out, c)
			queue = append(queue, c.pid)
		}
		queue = queue[1:]
	}
	return out
}

// procStat returns the state, start time and parent of pid from /proc/pid/stat.
func procStat(pid int) (state, start string, ppid int, ok bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return "", "", 0, false
	}
	// The command name (field 2) may hold spaces; fields after it are plain.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return "", "", 0, false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return "", "", 0, false
	}
	ppid, _ = strconv.Atoi(f[1])
	return f[0], f[19], ppid, true
}

func names(es []os.DirEntry) []string {
	var n []string
	for _, e := range es {
		n = append(n, e.Name())
	}
	return n
}
