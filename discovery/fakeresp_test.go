package discovery

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// fakeNode is a tiny RESP2 server that plays a Sentinel (SENTINEL MASTERS,
// MASTER, MYID, GET-MASTER-ADDR-BY-NAME, SUBSCRIBE and publishing) or a Redis
// (ROLE), enough to unit-test the Monitor without real processes.
type fakeNode struct {
	t    *testing.T
	ln   net.Listener
	addr string

	mu      sync.Mutex
	id      string
	masters map[string]string // sentinel: name → "ip:port"
	role    []any             // redis: the ROLE reply
	info    string            // redis: the reply to any INFO
	down    bool              // close every connection at once
	hang    bool              // read commands but answer nothing, like a SIGSTOPped process
	conns   map[net.Conn]*fakeConn
	calls   map[string]int // "sentinel masters" → times asked
	// failoverTimeout, when set, is each master's failover-timeout in
	// SENTINEL MASTERS (milliseconds).
	failoverTimeout int
	// epochs are the config-epoch of each master in SENTINEL MASTER(S).
	epochs map[string]uint64
	// masterDenied makes SENTINEL MASTER answer NOPERM (denyMaster).
	masterDenied bool
}

type fakeConn struct {
	mu         sync.Mutex
	w          *bufio.Writer
	subscribed map[string]bool
}

func newFakeNode(t *testing.T) *fakeNode {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeNode{t: t, ln: ln, addr: ln.Addr().String(), masters: map[string]string{}, conns: map[net.Conn]*fakeConn{}}
	f.id = fmt.Sprintf("%040d", ln.Addr().(*net.TCPAddr).Port)
	t.Cleanup(func() {
		_ = ln.Close()
		f.setDown(true)
	})
	go f.serve()
	return f
}

func (f *fakeNode) serve() {
	for {
		c, err := f.ln.Accept()
		if err != nil {
			return
		}
		f.mu.Lock()
		if f.down {
			f.mu.Unlock()
			_ = c.Close()
			continue
		}
		fc := &fakeConn{w: bufio.NewWriter(c), subscribed: map[string]bool{}}
		f.conns[c] = fc
		f.mu.Unlock()
		go f.handle(c, fc)
	}
}

// setDown closes every connection and refuses new ones (true), or serves
// again (false).
func (f *fakeNode) setDown(down bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.down = down
	if down {
		for c := range f.conns {
			_ = c.Close()
		}
		f.conns = map[net.Conn]*fakeConn{}
	}
}

func (f *fakeNode) setHang(hang bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.hang = hang
}

func (f *fakeNode) setFailoverTimeout(ms int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failoverTimeout = ms
}

func (f *fakeNode) setMaster(name, addr string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.masters[name] = addr
}

// setEpoch sets the configuration epoch this Sentinel reports for name.
func (f *fakeNode) setEpoch(name string, epoch uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.epochs == nil {
		f.epochs = map[string]uint64{}
	}
	f.epochs[name] = epoch
}

// denyMaster makes SENTINEL MASTER answer NOPERM, as for an ACL user
// without +sentinel|master; the other SENTINEL commands keep working.
func (f *fakeNode) denyMaster() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.masterDenied = true
}

// masterEntry is name's SENTINEL MASTER(S) entry. Caller holds f.mu.
func (f *fakeNode) masterEntry(name, addr string) []any {
	host, port, _ := net.SplitHostPort(addr)
	m := []any{"name", name, "ip", host, "port", port, "flags", "master", "config-epoch", strconv.FormatUint(f.epochs[name], 10)}
	if f.failoverTimeout > 0 {
		m = append(m, "failover-timeout", strconv.Itoa(f.failoverTimeout))
	}
	return m
}

func (f *fakeNode) setInfo(lines ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.info = strings.Join(lines, "\r\n") + "\r\n"
}

func (f *fakeNode) setRole(role ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.role = role
}

// publish sends a message to every connection subscribed to channel and
// returns how many got it.
func (f *fakeNode) publish(channel, payload string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, fc := range f.conns {
		fc.mu.Lock()
		if fc.subscribed[channel] {
			writeArray(fc.w, "message", channel, payload)
			_ = fc.w.Flush()
			n++
		}
		fc.mu.Unlock()
	}
	return n
}

// subscribers counts the connections subscribed to channel.
func (f *fakeNode) subscribers(channel string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, fc := range f.conns {
		fc.mu.Lock()
		if fc.subscribed[channel] {
			n++
		}
		fc.mu.Unlock()
	}
	return n
}

func (f *fakeNode) handle(c net.Conn, fc *fakeConn) {
	defer func() {
		_ = c.Close()
		f.mu.Lock()
		delete(f.conns, c)
		f.mu.Unlock()
	}()
	r := bufio.NewReader(c)
	for {
		args, err := readCommand(r)
		if err != nil {
			return
		}
		f.mu.Lock()
		if f.hang {
			f.mu.Unlock()
			continue
		}
		reply := f.reply(fc, args)
		f.mu.Unlock()
		fc.mu.Lock()
		for _, rep := range reply {
			writeValue(fc.w, rep)
		}
		err = fc.w.Flush()
		fc.mu.Unlock()
		if err != nil {
			return
		}
	}
}

// fakeErr is an error reply, fakeStatus a status reply.
type (
	fakeErr    string
	fakeStatus string
)

// reply computes the replies to one command. Caller holds f.mu.
func (f *fakeNode) reply(fc *fakeConn, args []string) []any {
	if len(args) == 0 {
		return []any{fakeErr("ERR empty command")}
	}
	cmd := strings.ToLower(args[0])
	sub := ""
	if len(args) > 1 {
		sub = strings.ToLower(args[1])
	}
	switch {
	case cmd == "ping":
		fc.mu.Lock()
		inSub := len(fc.subscribed) > 0
		fc.mu.Unlock()
		if inSub {
			return []any{[]any{"pong", ""}}
		}
		return []any{fakeStatus("PONG")}
	case cmd == "subscribe":
		var out []any
		fc.mu.Lock()
		for _, ch := range args[1:] {
			fc.subscribed[ch] = true
			out = append(out, []any{"subscribe", ch, int64(len(fc.subscribed))})
		}
		fc.mu.Unlock()
		return out
	case cmd == "info":
		return []any{f.info}
	case cmd == "role":
		if f.role == nil {
			return []any{fakeErr("ERR no role")}
		}
		return []any{f.role}
	case cmd == "sentinel" && sub == "masters":
		if f.calls == nil { // reply runs under f.mu
			f.calls = map[string]int{}
		}
		f.calls["sentinel masters"]++
		var out []any
		for name, addr := range f.masters {
			out = append(out, f.masterEntry(name, addr))
		}
		return []any{out}
	case cmd == "sentinel" && sub == "master" && len(args) == 3:
		if f.masterDenied {
			return []any{fakeErr("NOPERM User rca has no permissions to run the 'sentinel|master' command")}
		}
		addr, ok := f.masters[args[2]]
		if !ok {
			return []any{fakeErr("ERR No such master with that name")}
		}
		return []any{f.masterEntry(args[2], addr)}
	case cmd == "sentinel" && sub == "myid":
		return []any{f.id}
	case cmd == "sentinel" && sub == "get-master-addr-by-name" && len(args) == 3:
		if f.calls == nil {
			f.calls = map[string]int{}
		}
		f.calls["sentinel get-master-addr-by-name"]++
		addr, ok := f.masters[args[2]]
		if !ok {
			return []any{nil}
		}
		host, port, _ := net.SplitHostPort(addr)
		return []any{[]any{host, port}}
	case cmd == "client", cmd == "select", cmd == "auth":
		return []any{fakeStatus("OK")}
	}
	return []any{fakeErr("ERR unknown command '" + args[0] + "'")}
}

func readCommand(r *bufio.Reader) ([]string, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return nil, err
	}
	line = strings.TrimRight(line, "\r\n")
	if !strings.HasPrefix(line, "*") {
		return strings.Fields(line), nil
	}
	n, err := strconv.Atoi(line[1:])
	if err != nil {
		return nil, err
	}
	args := make([]string, 0, n)
	for range n {
		hdr, err := r.ReadString('\n')
		if err != nil {
			return nil, err
		}
		l, err := strconv.Atoi(strings.TrimRight(hdr, "\r\n")[1:])
		if err != nil {
			return nil, err
		}
		buf := make([]byte, l+2)
		if _, err := io.ReadFull(r, buf); err != nil {
			return nil, err
		}
		args = append(args, string(buf[:l]))
	}
	return args, nil
}

func writeArray(w *bufio.Writer, items ...string) {
	v := make([]any, len(items))
	for i, s := range items {
		v[i] = s
	}
	writeValue(w, v)
}

// writeValue writes v in RESP2: strings as bulk strings, fakeStatus and
// fakeErr as status and error replies, nil as a nil array.
func writeValue(w *bufio.Writer, v any) {
	switch t := v.(type) {
	case nil:
		fmt.Fprint(w, "*-1\r\n")
	case fakeErr:
		fmt.Fprintf(w, "-%s\r\n", string(t))
	case int64:
		fmt.Fprintf(w, ":%d\r\n", t)
	case int:
		fmt.Fprintf(w, ":%d\r\n", t)
	case fakeStatus:
		fmt.Fprintf(w, "+%s\r\n", string(t))
	case string:
		fmt.Fprintf(w, "$%d\r\n%s\r\n", len(t), t)
	case []any:
		fmt.Fprintf(w, "*%d\r\n", len(t))
		for _, e := range t {
			writeValue(w, e)
		}
	default:
		panic(fmt.Sprintf("fake: cannot write %T", v))
	}
}

// called returns how many times cmd was asked.
func (f *fakeNode) called(cmd string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[cmd]
}
