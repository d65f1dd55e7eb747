package discovery

import (
	"testing"
	"time"

	"github.com/seed42ef8afe/redis-consul-agent/internal/addr"
)

func TestTruthRule(t *testing.T) {
	const (
		a = "10.0.0.1:6379"
		b = "10.0.0.2:6379"
		c = "10.0.0.3:6379"
	)
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	hold := time.Minute
	// A step is either a poll (reports) or a confirmed switch (switchTo).
	type step struct {
		at       time.Duration
		reports  []string // one per reachable sentinel; "" = reachable but does not know the name
		switchTo string   // apply a confirmed +switch-master a→switchTo instead of a poll
		promote  string   // apply a confirmed promotion a→promote (failover timeout 10s) instead of a poll
		undo     bool     // the Monitor undoes the promotion (an abort) instead of a poll
		total    int
		wantAddr string // "" = not known at all
		wantSrc  string
		agree    int
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"majority of three", []step{
			{reports: []string{a, a, a}, total: 3, wantAddr: a, wantSrc: SourceMajority, agree: 3},
		}},
		{"two of three, one down", []step{
			{reports: []string{a, a}, total: 3, wantAddr: a, wantSrc: SourceMajority, agree: 2},
		}},
		{"one of three is no majority", []step{
			{reports: []string{a}, total: 3},
		}},
		{"split views have no majority", []step{
			{reports: []string{a, b}, total: 3},
		}},
		{"majority is over known sentinels, not reachable ones", []step{
			{reports: []string{a, a, a}, total: 3, wantAddr: a, wantSrc: SourceMajority, agree: 3},
			{reports: []string{a}, total: 3, wantAddr: a, wantSrc: SourceStale, agree: 1},
			{reports: nil, total: 3, wantAddr: a, wantSrc: SourceStale},
			{reports: []string{a, a}, total: 3, wantAddr: a, wantSrc: SourceMajority, agree: 2},
		}},
		{"addresses compare normalized", []step{
			{reports: []string{"10.0.0.1:6379", "10.0.0.1:06379", "[::ffff:10.0.0.1]:6379"}, total: 3, wantAddr: a, wantSrc: SourceMajority, agree: 3},
		}},
		{"majority failover", []step{
			{reports: []string{a, a, a}, total: 3, wantAddr: a, wantSrc: SourceMajority, agree: 3},
			{at: time.Second, reports: []string{b, b, a}, total: 3, wantAddr: b, wantSrc: SourceMajority, agree: 2},
		}},
		{"confirmed switch counts at once and holds until the majority catches up", []step{
			{reports: []string{a, a, a}, total: 3, wantAddr: a, wantSrc: SourceMajority, agree: 3},
			{at: time.Second, switchTo: b, total: 3, wantAddr: b, wantSrc: SourceSwitchMaster, agree: 0},
			{at: 1500 * time.Millisecond, reports: []string{a, a, a}, total: 3, wantAddr: b, wantSrc: SourceSwitchMaster, agree: 0},
			{at: 2 * time.Second, reports: []string{a, a, b}, total: 3, wantAddr: b, wantSrc: SourceSwitchMaster, agree: 1},
			{at: 3 * time.Second, reports: []string{b, a, b}, total: 3, wantAddr: b, wantSrc: SourceMajority, agree: 2},
			{at: 4 * time.Second, reports: []string{b, b, b}, total: 3, wantAddr: b, wantSrc: SourceMajority, agree: 3},
		}},
		{"switch survives all sentinels unreachable until hold", []step{
			{reports: []string{a, a, a}, total: 3, wantAddr: a, wantSrc: SourceMajority, agree: 3},
			{at: time.Second, switchTo: b, total: 3, wantAddr: b, wantSrc: SourceSwitchMaster},
			{at: 2 * time.Second, reports: nil, total: 3, wantAddr: b, wantSrc: SourceSwitchMaster},
			{at: 2*time.Second + hold, reports: nil, total: 3, wantAddr: b, wantSrc: SourceStale},
		}},
		{"switch that no majority confirms expires to the majority", []step{
			{reports: []string{a, a, a}, total: 3, wantAddr: a, wantSrc: SourceMajority, agree: 3},
			{at: time.Second, switchTo: b, total: 3, wantAddr: b, wantSrc: SourceSwitchMaster},
			{at: 30 * time.Second, reports: []string{a, a, a}, total: 3, wantAddr: b, wantSrc: SourceSwitchMaster},
			{at: 2*time.Second + hold, reports: []string{a, a, a}, total: 3, wantAddr: a, wantSrc: SourceMajority, agree: 3},
		}},
		{"a majority on a third address beats the switch", []step{
			{reports: []string{a, a, a}, total: 3, wantAddr: a, wantSrc: SourceMajority, agree: 3},
			{at: time.Second, switchTo: b, total: 3, wantAddr: b, wantSrc: SourceSwitchMaster},
			{at: 2 * time.Second, reports: []string{c, c, b}, total: 3, wantAddr: c, wantSrc: SourceMajority, agree: 2},
		}},
		{"switch before anything was learnt", []step{
			{switchTo: b, total: 3, wantAddr: b, wantSrc: SourceSwitchMaster},
			{at: time.Second, reports: []string{b, b}, total: 3, wantAddr: b, wantSrc: SourceMajority, agree: 2},
		}},
		{"switch ends staleness", []step{
			{reports: []string{a, a, a}, total: 3, wantAddr: a, wantSrc: SourceMajority, agree: 3},
			{at: time.Second, reports: []string{a}, total: 3, wantAddr: a, wantSrc: SourceStale, agree: 1},
			{at: 2 * time.Second, switchTo: b, total: 3, wantAddr: b, wantSrc: SourceSwitchMaster},
		}},
		{"a promotion counts at once and holds while the majority names the old master", []step{
			{reports: []string{a, a, a}, total: 3, wantAddr: a, wantSrc: SourceMajority, agree: 3},
			{at: time.Second, promote: b, total: 3, wantAddr: b, wantSrc: SourcePromotion},
			{at: 2 * time.Second, reports: []string{a, a, a}, total: 3, wantAddr: b, wantSrc: SourcePromotion},
			{at: 3 * time.Second, reports: []string{b, a, b}, total: 3, wantAddr: b, wantSrc: SourceMajority, agree: 2},
		}},
		{"an aborted failover undoes the promotion at once", []step{
			{reports: []string{a, a, a}, total: 3, wantAddr: a, wantSrc: SourceMajority, agree: 3},
			{at: time.Second, promote: b, total: 3, wantAddr: b, wantSrc: SourcePromotion},
			{at: 2 * time.Second, undo: true, total: 3, wantAddr: a, wantSrc: SourceMajority, agree: 3},
		}},
		{"a majority on the old master past the failover timeout undoes the promotion", []step{
			{reports: []string{a, a, a}, total: 3, wantAddr: a, wantSrc: SourceMajority, agree: 3},
			{at: time.Second, promote: b, total: 3, wantAddr: b, wantSrc: SourcePromotion},
			{at: 10 * time.Second, reports: []string{a, a, a}, total: 3, wantAddr: b, wantSrc: SourcePromotion},
			{at: 11*time.Second + time.Millisecond, reports: []string{a, a, a}, total: 3, wantAddr: a, wantSrc: SourceMajority, agree: 3},
		}},
		{"a majority on a third address beats the promotion", []step{
			{reports: []string{a, a, a}, total: 3, wantAddr: a, wantSrc: SourceMajority, agree: 3},
			{at: time.Second, promote: b, total: 3, wantAddr: b, wantSrc: SourcePromotion},
			{at: 2 * time.Second, reports: []string{c, c, a}, total: 3, wantAddr: c, wantSrc: SourceMajority, agree: 2},
		}},
		{"a confirmed switch replaces the promotion", []step{
			{reports: []string{a, a, a}, total: 3, wantAddr: a, wantSrc: SourceMajority, agree: 3},
			{at: time.Second, promote: b, total: 3, wantAddr: b, wantSrc: SourcePromotion},
			{at: 2 * time.Second, switchTo: c, total: 3, wantAddr: c, wantSrc: SourceSwitchMaster},
			{at: 3 * time.Second, undo: true, total: 3, wantAddr: c, wantSrc: SourceSwitchMaster},
		}},
		{"a promotion without any reachable sentinel ends with hold", []step{
			{reports: []string{a, a, a}, total: 3, wantAddr: a, wantSrc: SourceMajority, agree: 3},
			{at: time.Second, promote: b, total: 3, wantAddr: b, wantSrc: SourcePromotion},
			{at: 2 * time.Second, reports: nil, total: 3, wantAddr: b, wantSrc: SourcePromotion},
			{at: 2*time.Second + hold, reports: nil, total: 3, wantAddr: b, wantSrc: SourceStale},
		}},
		{"sentinels that do not know the name do not count", []step{
			{reports: []string{a, "", ""}, total: 3},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var s truthState
			var last Master
			var reports []string
			for i, st := range tt.steps {
				now := t0.Add(st.at)
				switch {
				case st.switchTo != "":
					// The Monitor re-evaluates a confirmed switch (or
					// promotion, or undo) against the views of the last poll.
					s.switchTo(a, st.switchTo, now)
				case st.promote != "":
					s.promoteTo(a, st.promote, now, now.Add(10*time.Second))
				case st.undo:
					s.unpromote()
				default:
					reports = st.reports
				}
				got, ok := s.eval("mymaster", reports, st.total, now, hold)
				if st.wantAddr == "" {
					if ok {
						t.Fatalf("step %d: got %+v, want unknown", i, got)
					}
					continue
				}
				if !ok {
					t.Fatalf("step %d: unknown, want %s (%s)", i, st.wantAddr, st.wantSrc)
				}
				if got.Addr != st.wantAddr || got.Source != st.wantSrc || got.Agree != st.agree || got.Total != st.total {
					t.Fatalf("step %d: got %s (%s, agree %d/%d), want %s (%s, agree %d/%d)",
						i, got.Addr, got.Source, got.Agree, got.Total, st.wantAddr, st.wantSrc, st.agree, st.total)
				}
				if got.Known() != (st.wantSrc != SourceStale) {
					t.Fatalf("step %d: Known() = %v for source %s", i, got.Known(), got.Source)
				}
				if last.Addr != "" && !addr.Same(last.Addr, got.Addr) && !got.Since.Equal(now) {
					t.Fatalf("step %d: address changed but Since = %v, want %v", i, got.Since, now)
				}
				if addr.Same(last.Addr, got.Addr) && !got.Since.Equal(last.Since) {
					t.Fatalf("step %d: address unchanged but Since moved from %v to %v", i, last.Since, got.Since)
				}
				last = got
			}
		})
	}
}
