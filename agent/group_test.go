package agent

import (
	"context"
	"sync"
	"testing"
)

func TestGroupSync(t *testing.T) {
	var mu sync.Mutex
	started, removed := map[string]int{}, map[string]int{}
	start := func(key string, spec any) (component, error) {
		mu.Lock()
		started[key]++
		mu.Unlock()
		return component{
			value:   key,
			run:     func(ctx context.Context) { <-ctx.Done() },
			removed: func(context.Context) { mu.Lock(); removed[key]++; mu.Unlock() },
		}, nil
	}
	var g group
	ctx := context.Background()
	g.sync(ctx, map[string]any{"a": 1, "b": 1}, start)
	g.sync(ctx, map[string]any{"a": 1, "b": 2, "c": 1}, start) // b changed, c new
	g.sync(ctx, map[string]any{"b": 2, "c": 1}, start)         // a removed
	mu.Lock()
	if started["a"] != 1 || started["b"] != 2 || started["c"] != 1 {
		t.Errorf("started = %v, want a:1 b:2 c:1", started)
	}
	if removed["a"] != 1 || removed["b"] != 1 || removed["c"] != 0 {
		t.Errorf("removed = %v, want a:1 b:1", removed)
	}
	mu.Unlock()
	if got := g.values(); len(got) != 2 || got[0] != "b" || got[1] != "c" {
		t.Errorf("values = %v", got)
	}
	g.stop()
	if len(g.values()) != 0 {
		t.Error("stop left members")
	}
	if removed["b"] != 1 || removed["c"] != 0 {
		t.Errorf("stop must not run removal hooks: %v", removed)
	}
}
