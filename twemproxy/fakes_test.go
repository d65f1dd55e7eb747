package twemproxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/seed42ef8afe/redis-consul-agent/internal/consulreg"
)

// fakeSource is a MasterSource the test sets directly.
type fakeSource struct {
	mu      sync.Mutex
	masters map[string]Master
	subs    []chan struct{}
}

func newFakeSource(m map[string]string) *fakeSource {
	s := &fakeSource{masters: map[string]Master{}}
	for n, a := range m {
		s.masters[n] = Master{Addr: a, Since: time.Now()}
	}
	return s
}

func (s *fakeSource) Masters() map[string]Master {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.masters)
}

func (s *fakeSource) Subscribe() (<-chan struct{}, func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ch := make(chan struct{}, 1)
	s.subs = append(s.subs, ch)
	return ch, func() {}
}

// set changes one master and notifies, the way a coalescing source does.
func (s *fakeSource) set(name, addr string) {
	s.mu.Lock()
	s.masters[name] = Master{Addr: addr, Since: time.Now()}
	subs := append([]chan struct{}(nil), s.subs...)
	s.mu.Unlock()
	for _, ch := range subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// fakeNutcracker is a Proxy that behaves like nutcracker for the probe: on
// Restart it reads the config file and answers PING on every pool's listen
// address. A server address in refuse makes it "fail to start".
type fakeNutcracker struct {
	t    *testing.T
	file string

	mu        sync.Mutex
	listeners []net.Listener
	restarts  int
	stops     int
	refuse    string // a substring of the file that makes the start fail
	restartFn func() error
	loaded    []byte
}

func (f *fakeNutcracker) Restart(ctx context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.restarts++
	for _, l := range f.listeners {
		l.Close()
	}
	f.listeners = nil
	if f.restartFn != nil {
		if err := f.restartFn(); err != nil {
			return err
		}
	}
	src, err := os.ReadFile(f.file)
	if err != nil {
		return err
	}
	f.loaded = src
	if f.refuse != "" && strings.Contains(string(src), f.refuse) {
		return nil // "started", but never listens: the probe fails
	}
	pools, err := Pools(src)
	if err != nil {
		return err
	}
	for _, p := range pools {
		_, addr, err := p.ListenNetwork()
		if err != nil {
			return err
		}
		l, err := listenRetry(addr)
		if err != nil {
			return err
		}
		f.listeners = append(f.listeners, l)
		go servePong(l)
	}
	return nil
}

func (f *fakeNutcracker) Stop(context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.stops++
	for _, l := range f.listeners {
		l.Close()
	}
	f.listeners = nil
	return nil
}

func (f *fakeNutcracker) counts() (restarts, stops int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.restarts, f.stops
}

func (f *fakeNutcracker) loadedConfig() []byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.loaded
}

func listenRetry(addr string) (net.Listener, error) {
	var err error
	for range 100 {
		var l net.Listener
		if l, err = net.Listen("tcp", addr); err == nil {
			return l, nil
		}
		time.Sleep(time.Millisecond)
	}
	return nil, err
}

// servePong answers every RESP command line with +PONG (or +OK to AUTH).
func servePong(l net.Listener) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			r := bufio.NewReader(c)
			for {
				cmd, err := readCommand(r)
				if err != nil {
					return
				}
				reply := "+PONG\r\n"
				if strings.EqualFold(cmd[0], "AUTH") {
					reply = "+OK\r\n"
				}
				if _, err := c.Write([]byte(reply)); err != nil {
					return
				}
			}
		}()
	}
}

func readCommand(r *bufio.Reader) ([]string, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return nil, err
	}
	var n int
	if _, err := fmt.Sscanf(line, "*%d", &n); err != nil || n < 1 {
		return nil, errors.New("bad request")
	}
	args := make([]string, n)
	for i := range args {
		if _, err := r.ReadString('\n'); err != nil {
			return nil, err
		}
		a, err := r.ReadString('\n')
		if err != nil {
			return nil, err
		}
		args[i] = strings.TrimRight(a, "\r\n")
	}
	return args, nil
}

// fakeRegistry records what the runner registers.
type fakeRegistry struct {
	mu       sync.Mutex
	services map[string]consulreg.Service
	health   map[string]consulreg.Health
	removed  []string
	updates  int
}

func newFakeRegistry() *fakeRegistry {
	return &fakeRegistry{services: map[string]consulreg.Service{}, health: map[string]consulreg.Health{}}
}

func (f *fakeRegistry) Update(_ context.Context, svc consulreg.Service, h consulreg.Health) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.services[svc.ID], f.health[svc.ID] = svc, h
	f.updates++
	return nil
}

func (f *fakeRegistry) Remove(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.services, id)
	delete(f.health, id)
	f.removed = append(f.removed, id)
	return nil
}

func (f *fakeRegistry) get(id string) (consulreg.Service, consulreg.Health, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.services[id]
	return s, f.health[id], ok
}

// nutcrackerBin returns the real nutcracker or skips the test.
func nutcrackerBin(t testing.TB) string {
	t.Helper()
	for _, p := range []string{os.Getenv("RCA_NUTCRACKER_BIN"), "nutcracker", "/usr/sbin/nutcracker"} {
		if p == "" {
			continue
		}
		if bin, err := exec.LookPath(p); err == nil {
			return bin
		}
	}
	t.Skip("nutcracker not installed (make deps)")
	return ""
}

// freeAddr returns a free loopback TCP address.
func freeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}
