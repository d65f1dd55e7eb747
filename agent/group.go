package agent

import (
	"context"
	"maps"
	"reflect"
	"slices"
	"sync"
)

// group runs keyed components, each under its own context, so that a SIGHUP
// reload can start, stop or replace one without touching the others.
type group struct {
	mu      sync.Mutex
	members map[string]*member
}

type member struct {
	spec   any
	value  any // the component, for status
	cancel context.CancelFunc
	done   chan struct{}
	// stopped runs after the component returned, on removal only (not on
	// shutdown, where the agent deregisters everything at once).
	stopped func(context.Context)
}

// runFunc is one component's loop; it returns when ctx is done.
type runFunc func(ctx context.Context)

// component is what a startFunc builds: the value (for status), its loop,
// and what to do once the loop has ended because the spec was removed.
type component struct {
	value   any
	run     runFunc
	removed func(context.Context)
}

// startFunc builds a component from its spec.
type startFunc func(key string, spec any) (component, error)

// sync makes the running set equal to desired: keys that are gone are
// stopped (and their removed hook runs), keys whose spec changed are
// restarted, new keys are started. A start error leaves that key not running
// and is returned with the others; nothing already running is touched by it.
func (g *group) sync(ctx context.Context, desired map[string]any, start startFunc) []error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.members == nil {
		g.members = map[string]*member{}
	}
	var errs []error
	for key, m := range g.members {
		spec, keep := desired[key]
		if keep && reflect.DeepEqual(spec, m.spec) {
			continue
		}
		m.cancel()
		<-m.done
		if m.stopped != nil {
			m.stopped(ctx)
		}
		delete(g.members, key)
	}
	for key, spec := range desired {
		if _, ok := g.members[key]; ok {
			continue
		}
		c, err := start(key, spec)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		cctx, cancel := context.WithCancel(ctx)
		m := &member{spec: spec, value: c.value, cancel: cancel, done: make(chan struct{}), stopped: c.removed}
		g.members[key] = m
		go func() {
			defer close(m.done)
			c.run(cctx)
		}()
	}
	return errs
}

// stop cancels every component and waits for all of them to return.
func (g *group) stop() {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, m := range g.members {
		m.cancel()
	}
	for key, m := range g.members {
		<-m.done
		delete(g.members, key)
	}
}

// values lists the running components, sorted by key.
func (g *group) values() []any {
	g.mu.Lock()
	defer g.mu.Unlock()
	keys := slices.Sorted(maps.Keys(g.members))
	out := make([]any, 0, len(keys))
	for _, k := range keys {
		out = append(out, g.members[k].value)
	}
	return out
}
