package bench

import "fmt"

// rows adds figures 7 and 8 to rep: each path beside HAProxy's role check,
// measured in the same runs.
func (f *hxFigures) rows(rep *Report) {
	ref := f.firstRef.summary()
	noLater := func(s Summary) bool { return s.P50 <= ref.P50 }
	zero := func(s Summary) bool { return s.N > 0 && s.Max == 0 }
	share := func(s Summary) bool { return s.P50 <= 15 }
	rep.Rows = append(rep.Rows,
		judged("7", "HAProxy: kill -9 → first write on the new master, agent-driven", "≤ role check", f.firstDriven.summary(), noLater),
		plain("7", "  the same through HAProxy's role check (inter 100ms fall 1 rise 1)", "", ref),
		plain("7", "  agent-driven: the promoted replica answers ROLE master → that write", "", f.shareDriven.summary()),
		judged("7", "HAProxy: acknowledged writes lost once the old master returns, agent-driven", "0", f.lostDriven.summary(), zero),
		plain("7", "  the same through HAProxy's role check", "", f.lostRef.summary()),
		judged("7", "HAProxy: acknowledged writes lost in a planned failover (SENTINEL FAILOVER), agent-driven", "0", f.planDriven.summary(), zero),
		plain("7", "  the same through HAProxy's role check", "", f.planRef.summary()),
		plain("8", "kill -9 → the promoted replica answers ROLE master (polled every 1 ms)", "", f.promoted.summary()),
		plain("8", "kill -9 → first +switch-master of any Sentinel", "", f.switched.summary()),
		judged("8a", "kill -9 → first write via twemproxy lands on the new master", "≤ role check", f.firstTwem.summary(), noLater),
		judged("8a", "  agent's share: ROLE master → that write", "p50 ≤ 15 ms", f.shareTwem.summary(), share),
		plain("8a", "  agent's own log: ROLE master → the proxy agent's \"promotion confirmed\" (ms resolution)", "", f.detectProxy.summary()),
		plain("8a", "  agent's own log: its twemproxy pipeline run (validate, write, restart, probe)", "", f.pipeline.summary()),
		judged("8b", "kill -9 → first write via master.redis-hx.service.consul lands on the new master", "≤ role check", f.firstDNS.summary(), noLater),
		judged("8b", "  agent's share: ROLE master → that write", "p50 ≤ 15 ms", f.shareDNS.summary(), share),
		plain("8b", "  agent's own log: ROLE master → the promoted node's agent's \"promotion confirmed\"", "", f.detectNode.summary()),
		judged("8c", "planned failover: acknowledged writes lost via twemproxy", "0", f.planTwem.summary(), zero),
		judged("8c", "  the same via Consul DNS", "0", f.planDNS.summary(), zero),
		judged("8d", "old master returns: acknowledged writes lost via twemproxy", "0", f.lostTwem.summary(), zero),
		judged("8d", "  the same via Consul DNS", "0", f.lostDNS.summary(), zero),
	)
	for _, p := range []struct {
		name string
		s    Summary
	}{{"agent-driven HAProxy", f.firstDriven.summary()}, {"twemproxy", f.firstTwem.summary()}, {"Consul DNS", f.firstDNS.summary()}} {
		if p.s.N > 0 && ref.N > 0 {
			rep.Notes = append(rep.Notes, fmt.Sprintf("7/8: kill -9 → first write, %s p50 / role check p50 = %.2f (%.0f ms vs %.0f ms)",
				p.name, p.s.P50/ref.P50, p.s.P50, ref.P50))
		}
	}
	rep.Notes = append(rep.Notes, "7/8: one shard (3 Redis, an agent beside each, 3 Sentinels, down-after 1s), one HAProxy 2.6 with "+
		"both backends, one twemproxy pool supervised by the agent that drives HAProxy; four clients at once: HAProxy driven and role "+
		"check (unique keys every 1 ms, connections renewed every ~20 ms), twemproxy (every 1 ms) and Consul DNS (every 5 ms, "+
		"resolving again after any error). Kill runs: the old master restarts as a master (empty, no replicaof) right after the "+
		"failover until Sentinel turns it into a replica; every acknowledged key of a run is looked up on the final master. "+
		"The agent's share starts when the benchmark's ROLE poll (every 1 ms, send time) first sees the promoted replica as master.")
}
