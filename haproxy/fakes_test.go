package haproxy

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/seed42ef8afe/redis-consul-agent/internal/consulreg"
)

// stateHeader is HAProxy 2.6's `show servers state` header, verbatim.
const stateHeader = "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port\n"

// fakeAPI is a runtime API on a unix socket that answers like HAProxy 2.6
// for the commands the driver sends, and records them.
type fakeAPI struct {
	path string
	ln   net.Listener

	mu       sync.Mutex
	servers  []*ServerState
	commands []string
}

func newFakeAPI(t *testing.T, servers ...ServerState) *fakeAPI {
	t.Helper()
	f := &fakeAPI{path: filepath.Join(t.TempDir(), "admin.sock")}
	for i := range servers {
		s := servers[i]
		f.servers = append(f.servers, &s)
	}
	f.listen(t)
	return f
}

func (f *fakeAPI) listen(t *testing.T) {
	ln, err := net.Listen("unix", f.path)
	if err != nil {
		t.Fatal(err)
	}
	f.ln = ln
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go f.serve(c)
		}
	}()
}

// stop closes the socket, as a dead HAProxy does.
func (f *fakeAPI) stop() { f.ln.Close() }

func (f *fakeAPI) serve(c net.Conn) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return
	}
	cmd := strings.TrimSpace(line)
	f.mu.Lock()
	f.commands = append(f.commands, cmd)
	out := f.answer(cmd)
	f.mu.Unlock()
	fmt.Fprint(c, out+"\n")
}

func (f *fakeAPI) find(name string) *ServerState {
	for _, s := range f.servers {
		if s.Backend+"/"+s.Server == name {
			return s
		}
	}
	return nil
}

func (f *fakeAPI) answer(cmd string) string {
	w := strings.Fields(cmd)
	switch {
	case cmd == "show servers state":
		var b strings.Builder
		b.WriteString(stateHeader)
		for i, s := range f.servers {
			host, port, _ := net.SplitHostPort(s.Addr)
			fmt.Fprintf(&b, "3 %s %d %s %s %d %d 1 1 5 6 3 4 %d 0 0 0 - %s - 0 0 - - 0\n", s.Backend, i+1, s.Server, host, s.OpState, s.Admin, s.CheckState, port)
		}
		return b.String()
	case len(w) >= 4 && w[0] == "set" && w[1] == "server":
		s := f.find(w[2])
		if s == nil {
			return "No such server.\n"
		}
		switch {
		case w[3] == "addr" && len(w) == 7:
			old := s.Addr
			s.Addr = net.JoinHostPort(w[4], w[6])
			return fmt.Sprintf("IP changed from '%s' to '%s' by 'stats socket command'\n", old, s.Addr)
		case w[3] == "state" && w[4] == "ready":
			s.Admin = 0
			return ""
		case w[3] == "health" && w[4] == "up":
			s.OpState = OpRunning
			return ""
		}
	case len(w) == 4 && w[0] == "shutdown" && w[1] == "sessions":
		if f.find(w[3]) == nil {
			return "No such server.\n"
		}
		return ""
	}
	return "Unknown command.\n"
}

func (f *fakeAPI) took(prefix string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, c := range f.commands {
		if strings.HasPrefix(c, prefix) {
			n++
		}
	}
	return n
}

func (f *fakeAPI) addrOf(name string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if s := f.find(name); s != nil {
		return s.Addr
	}
	return ""
}

func (f *fakeAPI) set(name, a string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.find(name).Addr = a
}

// fakeTruth is a Truth the test sets.
type fakeTruth struct {
	mu      sync.Mutex
	masters map[string]Master
	subs    []chan struct{}
}

func (t *fakeTruth) Masters() map[string]Master {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := map[string]Master{}
	for k, v := range t.masters {
		out[k] = v
	}
	return out
}

func (t *fakeTruth) Subscribe() (<-chan struct{}, func()) {
	t.mu.Lock()
	defer t.mu.Unlock()
	ch := make(chan struct{}, 1)
	t.subs = append(t.subs, ch)
	return ch, func() {}
}

func (t *fakeTruth) set(name string, m Master) {
	t.mu.Lock()
	if t.masters == nil {
		t.masters = map[string]Master{}
	}
	t.masters[name] = m
	subs := t.subs
	t.mu.Unlock()
	for _, ch := range subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// fakeRegistry records the last health of each service.
type fakeRegistry struct {
	mu      sync.Mutex
	health  map[string]consulreg.Health
	svc     map[string]consulreg.Service
	removed []string
}

func (r *fakeRegistry) Update(_ context.Context, s consulreg.Service, h consulreg.Health) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.health == nil {
		r.health, r.svc = map[string]consulreg.Health{}, map[string]consulreg.Service{}
	}
	r.health[s.ID], r.svc[s.ID] = h, s
	return nil
}

func (r *fakeRegistry) Remove(_ context.Context, id string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.health, id)
	r.removed = append(r.removed, id)
	return nil
}

func (r *fakeRegistry) get(id string) (consulreg.Health, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	h, ok := r.health[id]
	return h, ok
}

// eventually polls cond every 5ms for up to 3s.
func eventually(t *testing.T, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
