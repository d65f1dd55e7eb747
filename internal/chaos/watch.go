package chaos

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/seed42ef8afe/redis-consul-agent/internal/sandbox"
)

// namedWithin is how recently a Sentinel must have named a node master for
// DNS to answer it.
const namedWithin = 3 * time.Second

// consulChurnWindow is how long after a Consul server was killed or
// restarted DNS answers are not judged for naming (two masters still are).
// Right after that, Consul's DNS (allow_stale off, on clients and servers
// alike) answered, for 0.1–0.7 s, master tags the catalog had held seconds
// to minutes before, which their agents had replaced and read back: a new
// leader whose state is still catching up with its log. In the 30-minute
// campaign of seed 2 every one of the 28 unnamed-master samples runs came
// within 3 s of a server kill or restart. The agent cannot change what a
// Consul server answers from its own state.
const consulChurnWindow = 5 * time.Second

// ack is one acknowledged write.
type ack struct {
	key, shard string
	node       string // the Redis that acknowledged it, as far as the writer knows
	via        string // dns, proxy (the twemproxy pool) or haproxy
	at         time.Time
}

// proxyVersion is one content of the proxy's config file and since when.
type proxyVersion struct {
	at      time.Time
	servers map[string]string // shard name → address
}

// watchers hold the state of the invariant checks that run all through.
type watchers struct {
	mu      sync.Mutex
	open    map[string]int // open DNS violation (shard/invariant) → index in violations
	samples map[string]int
	lastDNS map[string]string
	proxy   []proxyVersion
	tags    map[string]string // shard → hash tag routed to it by the pool
	clients map[string]*redis.Client
	// hapServer is the last `show servers state` line seen per shard, and
	// twoSince when HAProxy was first seen with sessions of one shard on two
	// live masters, per shard (zero: not now).
	hapServer map[string]string
	twoSince  map[string]time.Time
}

func (cp *campaign) startWatchers(ctx context.Context, wg *sync.WaitGroup) {
	cp.w = &watchers{open: map[string]int{}, samples: map[string]int{}, lastDNS: map[string]string{},
		tags: map[string]string{}, clients: map[string]*redis.Client{}, hapServer: map[string]string{}, twoSince: map[string]time.Time{}}
	goLoop := func(every time.Duration, f func(context.Context)) {
		wg.Go(func() {
			t := time.NewTicker(every)
			defer t.Stop()
			for {
				f(ctx)
				select {
				case <-ctx.Done():
					return
				case <-t.C:
				}
			}
		})
	}
	goLoop(100*time.Millisecond, cp.observeSentinels)
	for _, sn := range cp.st.sentinels {
		wg.Go(func() { cp.followEvents(ctx, sn.Addr()) })
	}
	goLoop(10*time.Millisecond, cp.watchFile)
	goLoop(2*time.Second, cp.watchMemory)
	for _, sh := range cp.st.shards {
		goLoop(8*time.Millisecond, func(ctx context.Context) { cp.sampleDNS(ctx, sh.Name) })
		goLoop(15*time.Millisecond, func(ctx context.Context) { cp.writeDNS(ctx, sh.Name) })
		goLoop(15*time.Millisecond, func(ctx context.Context) { cp.writeProxy(ctx, sh.Name) })
		wg.Go(func() { cp.writeHAProxy(ctx, sh.Name) })
	}
	goLoop(40*time.Millisecond, cp.sampleHAProxy)
}

// observeSentinels asks every Sentinel which master it names for each shard
// and records when each address was last named, and when the round ended.
func (cp *campaign) observeSentinels(ctx context.Context) {
	defer func() {
		cp.mu.Lock()
		cp.observedAt = time.Now()
		cp.mu.Unlock()
	}()
	for _, s := range cp.st.sentinels {
		for _, sh := range cp.st.shards {
			cctx, cancel := context.WithTimeout(ctx, 150*time.Millisecond)
			v, err := sandbox.Do(cctx, s.Addr(), "SENTINEL", "get-master-addr-by-name", sh.Name)
			cancel()
			hp, ok := v.([]any)
			if err != nil || !ok || len(hp) != 2 {
				continue
			}
			addr := net.JoinHostPort(fmt.Sprint(hp[0]), fmt.Sprint(hp[1]))
			cp.mu.Lock()
			if cp.named[sh.Name] == nil {
				cp.named[sh.Name] = map[string]time.Time{}
			}
			if cp.lastNaming(sh.Name, s.Addr()) != addr {
				cp.namings[sh.Name] = append(cp.namings[sh.Name], naming{at: time.Now(), sentinel: s.Addr(), addr: addr})
				cp.events = append(cp.events, event{at: time.Now(), text: fmt.Sprintf("sentinel %s names %s for %s", s.Addr(), addr, sh.Name)})
			}
			cp.named[sh.Name][addr] = time.Now()
			cp.mu.Unlock()
		}
	}
}

// followEvents records the nodes a Sentinel names in its failover events
// as named: the replica the leader selected and promoted (the agent acts on
// that promotion before any Sentinel answers get-master-addr-by-name with it)
// and the new master of a +switch-master.
func (cp *campaign) followEvents(ctx context.Context, sentinel string) {
	for ctx.Err() == nil {
		c := redis.NewClient(&redis.Options{Addr: sentinel, Protocol: 2, DisableIdentity: true, DialTimeout: 300 * time.Millisecond, MaxRetries: -1})
		ps := c.Subscribe(ctx, "+selected-slave", "+promoted-slave", "+switch-master")
		// The channel closes only with the subscription: close it when the
		// campaign stops watching.
		stop := context.AfterFunc(ctx, func() { ps.Close() })
		for msg := range ps.Channel() {
			f := strings.Fields(msg.Payload)
			var shard, addr string
			switch {
			case msg.Channel == "+switch-master" && len(f) == 5:
				shard, addr = f[0], net.JoinHostPort(f[3], f[4])
			case len(f) >= 6 && f[0] == "slave" && f[4] == "@":
				shard, addr = f[5], f[1]
			default:
				continue
			}
			cp.mu.Lock()
			if cp.named[shard] == nil {
				cp.named[shard] = map[string]time.Time{}
			}
			cp.named[shard][addr] = time.Now()
			cp.events = append(cp.events, event{at: time.Now(), text: fmt.Sprintf("sentinel %s %s %s for %s", sentinel, msg.Channel, addr, shard)})
			cp.mu.Unlock()
		}
		stop()
		ps.Close()
		c.Close()
		select {
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond): // reconnect pause
		}
	}
}

// naming is a Sentinel's answer for a shard changing.
type naming struct {
	at       time.Time
	sentinel string
	addr     string
}

// lastNaming is the last master sentinel named for shard; cp.mu held.
func (cp *campaign) lastNaming(shard, sentinel string) string {
	list := cp.namings[shard]
	for i := len(list) - 1; i >= 0; i-- {
		if list[i].sentinel == sentinel {
			return list[i].addr
		}
	}
	return ""
}

// namedAt is what each Sentinel named for shard at t.
func (cp *campaign) namedAt(shard string, t time.Time) map[string]string {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	out := map[string]string{}
	for _, n := range cp.namings[shard] {
		if n.at.After(t) {
			break
		}
		out[n.sentinel] = n.addr
	}
	return out
}

// replacedWithin reports whether a Sentinel named a master other than addr
// for shard within d after t.
func (cp *campaign) replacedWithin(shard, addr string, t time.Time, d time.Duration) bool {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	for _, n := range cp.namings[shard] {
		if n.at.After(t) && n.at.Sub(t) <= d && n.addr != addr {
			return true
		}
	}
	return false
}

// aliveConsul picks a running Consul agent at random.
func (cp *campaign) aliveConsul() *sandbox.Consul {
	all := cp.st.consuls()
	for range len(all) {
		// Not the campaign's seeded source: which agent answers a sample
		// need not be reproducible, and that source is the injector's.
		k := all[rand.IntN(len(all))]
		if k.Alive() {
			return k
		}
	}
	return nil
}

// sampleDNS asks a Consul agent for the shard's master and checks the answer:
// at most one node, and only one a Sentinel named lately.
func (cp *campaign) sampleDNS(ctx context.Context, shard string) {
	k := cp.aliveConsul()
	if k == nil {
		return
	}
	cctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	ips, err := k.LookupA(cctx, shardTag(shard)+".redis.service.consul")
	cancel()
	if err != nil {
		return
	}
	slices.Sort(ips)
	ips = slices.Compact(ips)
	cp.count("dns samples", 1)
	answer := strings.Join(ips, ",")
	cp.w.mu.Lock()
	changed := cp.w.lastDNS[shard] != answer
	cp.w.lastDNS[shard] = answer
	cp.w.mu.Unlock()
	if changed {
		cp.note("dns %s-master: [%s] (asked %s)", shard, answer, k.NodeName())
	}
	live := len(ips)
	if len(ips) > 1 {
		live = cp.liveMasters(ctx, ips)
		if live < 2 {
			// A dead node in DNS beside the master takes no writes: clients
			// that reach it fail to connect. Counted, not a violation.
			cp.count("dns answers with a dead old master", 1)
		}
	}
	cp.sampleVerdict(shard, "two-masters", live > 1,
		fmt.Sprintf("DNS %s-master answered %d nodes [%s], %d of them live masters (asked %s)", shard, len(ips), answer, live, k.NodeName()))
	var unnamed []string
	now := time.Now()
	cp.mu.Lock()
	stale := now.Sub(cp.observedAt) > time.Second
	churn := now.Sub(cp.churnedAt) < consulChurnWindow
	cp.mu.Unlock()
	if stale {
		// The Sentinel observer has not finished a round for a second (a
		// frozen Sentinel, a starved machine): it cannot say who is named.
		cp.count("dns samples not judged for naming (observer behind)", 1)
		ips = nil
	}
	for _, ip := range ips {
		r := cp.st.nodeByIP(ip)
		if r == nil {
			unnamed = append(unnamed, ip+" (not a node of the stack)")
			continue
		}
		cp.mu.Lock()
		at, ok := cp.named[shard][r.Addr()]
		cp.mu.Unlock()
		if !ok || now.Sub(at) > namedWithin {
			unnamed = append(unnamed, r.Addr())
		}
	}
	if churn && len(unnamed) > 0 {
		cp.count("dns answers naming an unnamed node within 5s of a consul server kill or restart (consul's, not judged)", 1)
		unnamed = nil
	}
	cp.sampleVerdict(shard, "unnamed-master", len(unnamed) > 0,
		fmt.Sprintf("DNS %s-master answered %s, which no Sentinel named master in the last %s (asked %s)", shard, strings.Join(unnamed, ", "), namedWithin, k.NodeName()))
}

// liveMasters counts the nodes at ips that answer ROLE master now.
func (cp *campaign) liveMasters(ctx context.Context, ips []string) int {
	n := 0
	for _, ip := range ips {
		r := cp.st.nodeByIP(ip)
		if r == nil {
			n++ // not a node of the stack: count it, so the violation shows
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, 150*time.Millisecond)
		role, err := cp.client(r.Addr()).Do(cctx, "ROLE").Slice()
		cancel()
		if err == nil && len(role) > 0 && role[0] == "master" {
			n++
		}
	}
	return n
}

// sampleVerdict opens one violation per run of bad samples (of DNS or of
// HAProxy) and says how long the run lasted when it ends.
func (cp *campaign) sampleVerdict(shard, invariant string, bad bool, detail string) {
	key := shard + "/" + invariant
	cp.w.mu.Lock()
	idx, open := cp.w.open[key]
	if bad {
		cp.w.samples[key]++
	}
	n := cp.w.samples[key]
	if !bad {
		delete(cp.w.open, key)
		cp.w.samples[key] = 0
	}
	cp.w.mu.Unlock()
	switch {
	case bad && !open:
		cp.violate(invariant, detail)
		cp.mu.Lock()
		idx = len(cp.violations) - 1
		cp.mu.Unlock()
		cp.w.mu.Lock()
		cp.w.open[key] = idx
		cp.w.mu.Unlock()
	case !bad && open:
		cp.mu.Lock()
		v := &cp.violations[idx]
		v.Detail += fmt.Sprintf("; lasted %s, %d samples", (time.Since(cp.began) - v.At).Round(time.Millisecond), n)
		cp.mu.Unlock()
	}
}

// shardTag is the Consul tag of a shard's master (the master name is a DNS
// label already in the campaign).
func shardTag(shard string) string { return shard + "-master" }

// watchFile checks every new content of the proxy's config file with
// nutcracker --test-conf, and keeps the history of its server addresses.
func (cp *campaign) watchFile(ctx context.Context) {
	b, err := os.ReadFile(cp.st.proxyConf)
	if err != nil {
		if !os.IsNotExist(err) {
			cp.note("read %s: %v", cp.st.proxyConf, err)
		}
		return
	}
	servers := parseServers(b)
	cp.w.mu.Lock()
	var last map[string]string
	if n := len(cp.w.proxy); n > 0 {
		last = cp.w.proxy[n-1].servers
	}
	same := last != nil && mapsEqual(last, servers)
	if !same {
		cp.w.proxy = append(cp.w.proxy, proxyVersion{at: time.Now(), servers: servers})
	}
	cp.w.mu.Unlock()
	if same {
		return
	}
	cp.count("config versions checked", 1)
	cp.note("proxy config: %v", servers)
	if len(servers) != len(cp.st.shards) {
		cp.violate("config-file", fmt.Sprintf("%s names %d of %d shards: %q", cp.st.proxyConf, len(servers), len(cp.st.shards), b))
		return
	}
	check := filepath.Join(cp.o.Dir, "chaos-check.yml")
	if err := os.WriteFile(check, b, 0o644); err != nil {
		return
	}
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	out, err := exec.CommandContext(cctx, cp.st.nut, "--test-conf", "-c", check).CombinedOutput()
	if err != nil && cctx.Err() == nil {
		cp.violate("config-file", fmt.Sprintf("nutcracker --test-conf rejects a version of %s: %v: %s", cp.st.proxyConf, err, bytes.TrimSpace(out)))
	}
}

// parseServers reads "- host:port:weight name" lines.
func parseServers(b []byte) map[string]string {
	out := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(line), "-")))
		if !strings.HasPrefix(strings.TrimSpace(line), "- ") || len(f) != 2 {
			continue
		}
		hpw := f[0]
		i := strings.LastIndexByte(hpw, ':')
		if i < 0 {
			continue
		}
		out[f[1]] = hpw[:i]
	}
	return out
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// proxyServerAt is the address the proxy's config gave shard at t.
func (cp *campaign) proxyServerAt(shard string, t time.Time) string {
	cp.w.mu.Lock()
	defer cp.w.mu.Unlock()
	addr := ""
	for _, v := range cp.w.proxy {
		if v.at.After(t) {
			break
		}
		addr = v.servers[shard]
	}
	return addr
}

// watchMemory records each agent's resident memory.
func (cp *campaign) watchMemory(context.Context) {
	for _, h := range cp.st.allHosts() {
		pid := h.agent.Pid()
		if pid <= 0 {
			continue
		}
		rss := vmRSS(pid)
		cp.mu.Lock()
		prev := cp.maxRSS[h.name]
		if rss > prev {
			cp.maxRSS[h.name] = rss
		}
		cp.mu.Unlock()
		cp.count("memory samples", 1)
		if rss > cp.o.MaxAgentRSS && prev <= cp.o.MaxAgentRSS {
			cp.violate("memory", fmt.Sprintf("agent of %s has %d MiB resident (limit %d MiB)", h.name, rss>>20, cp.o.MaxAgentRSS>>20))
		}
	}
}

func vmRSS(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}

// client returns a fail-fast Redis client for addr, one per address.
func (cp *campaign) client(addr string) *redis.Client {
	cp.w.mu.Lock()
	defer cp.w.mu.Unlock()
	c := cp.w.clients[addr]
	if c == nil {
		c = redis.NewClient(&redis.Options{Addr: addr, Protocol: 2, DisableIdentity: true, DialTimeout: 200 * time.Millisecond,
			ReadTimeout: 300 * time.Millisecond, WriteTimeout: 300 * time.Millisecond, MaxRetries: -1, PoolSize: 2})
		cp.w.clients[addr] = c
	}
	return c
}

func (cp *campaign) closeClients() {
	cp.w.mu.Lock()
	defer cp.w.mu.Unlock()
	for _, c := range cp.w.clients {
		c.Close()
	}
	cp.w.clients = map[string]*redis.Client{}
}

var writeSeq struct {
	mu sync.Mutex
	n  int
}

func nextKey(prefix string) string {
	writeSeq.mu.Lock()
	defer writeSeq.mu.Unlock()
	writeSeq.n++
	return prefix + ":" + strconv.Itoa(writeSeq.n)
}

// writeDNS writes one unique key to the node DNS answers as the shard's master.
func (cp *campaign) writeDNS(ctx context.Context, shard string) {
	k := cp.aliveConsul()
	if k == nil {
		return
	}
	cctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	ips, err := k.LookupA(cctx, shardTag(shard)+".redis.service.consul")
	if err != nil || len(ips) != 1 {
		return
	}
	r := cp.st.nodeByIP(ips[0])
	if r == nil {
		return
	}
	key := nextKey("chaos:" + shard + ":dns")
	if cp.client(r.Addr()).Set(cctx, key, "1", 0).Err() != nil {
		return
	}
	cp.mu.Lock()
	cp.acks = append(cp.acks, ack{key: key, shard: shard, node: r.Addr(), via: "dns", at: time.Now()})
	cp.mu.Unlock()
}

// writeProxy writes one unique key through the pool, with the hash tag the
// pool routes to shard.
func (cp *campaign) writeProxy(ctx context.Context, shard string) {
	cp.w.mu.Lock()
	tag := cp.w.tags[shard]
	cp.w.mu.Unlock()
	if tag == "" {
		return
	}
	cctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	key := nextKey("{" + tag + "}:chaos:" + shard + ":proxy")
	// Plain RESP: go-redis opens a connection with HELLO, on which
	// nutcracker hangs up.
	if v, err := sandbox.Do(cctx, cp.st.poolAddr, "SET", key, "1"); err != nil || v != "OK" {
		return
	}
	at := time.Now()
	cp.mu.Lock()
	cp.acks = append(cp.acks, ack{key: key, shard: shard, via: "proxy", at: at})
	cp.mu.Unlock()
}

// findTags finds, for each shard, a hash tag the pool routes to it: it
// writes probe keys through the pool and looks for them on each master.
func (cp *campaign) findTags(ctx context.Context, masters map[string]string) {
	for i := 0; i < 256; i++ {
		tag := "t" + strconv.Itoa(i)
		key := "{" + tag + "}:probe"
		if _, err := sandbox.Do(ctx, cp.st.poolAddr, "SET", key, "1"); err != nil {
			cp.note("probe %s through the pool: %v", key, err)
			continue
		}
		for shard, m := range masters {
			cp.w.mu.Lock()
			have := cp.w.tags[shard] != ""
			cp.w.mu.Unlock()
			if have {
				continue
			}
			if n, err := cp.client(m).Exists(ctx, key).Result(); err == nil && n == 1 {
				cp.w.mu.Lock()
				cp.w.tags[shard] = tag
				cp.w.mu.Unlock()
			}
		}
		cp.w.mu.Lock()
		done := len(cp.w.tags) == len(masters)
		cp.w.mu.Unlock()
		if done {
			return
		}
	}
}
