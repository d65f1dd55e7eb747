package twemproxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"sync"
	"time"
)

// Candidate is a replica that Sentinel may promote for a master name: the
// first sign of a failover (+sdown, +odown, +try-failover of the master)
// names the master's replicas, +selected-slave narrows them to one.
type Candidate struct {
	Name string // the Sentinel master name
	Addr string // the replica's host:port
}

// Prestage renders and validates, for each candidate, the file the proxy
// would need if that candidate were promoted now, and keeps it as a synced
// temp file beside the config. When the promotion comes and the pipeline's
// file is byte for byte one of them, the pipeline renames it into place
// without writing or running nutcracker --test-conf again: only the rename,
// the restart and the probe remain on the failover's path.
//
// Each call replaces the staged set: files of candidates no longer listed
// are removed, and every staged file is removed after the next run that
// acts (the file it was rendered from has changed or it was used) and on
// shutdown. A staged file that a crash leaves behind is a temp file that the
// next start removes. A candidate whose file fails to render or validate is
// reported in the error and not staged; the others are. Prestage returns how
// many files are staged. Safe to call from any goroutine, e.g. the adapter
// of the Monitor's failover events.
func (r *Runner) Prestage(ctx context.Context, candidates []Candidate) (int, error) {
	cur, err := os.ReadFile(r.o.ConfigFile)
	if err != nil && !(errors.Is(err, os.ErrNotExist) && r.render.TemplateText+r.render.Template != "") {
		return 0, fmt.Errorf("prestage: read %s: %w", r.o.ConfigFile, err)
	}
	truth := r.o.Masters.Masters()
	want := map[string][]byte{} // by sha, the files the candidates need
	var errs []error
	for _, c := range candidates {
		m := maps.Clone(truth)
		m[c.Name] = Master{Addr: c.Addr, Since: time.Now()}
		rd, err := renderFrom(r.render, cur, m)
		if err != nil {
			errs = append(errs, fmt.Errorf("prestage %s at %s: %w", c.Name, c.Addr, err))
			continue
		}
		if _, err := Pools(rd.Desired); err != nil {
			errs = append(errs, fmt.Errorf("prestage %s at %s: config to write: %w", c.Name, c.Addr, err))
			continue
		}
		if rd.Changed() {
			want[sha(rd.Desired)] = rd.Desired
		}
	}
	r.stage.keepOnly(want)
	for key, data := range want {
		if r.stage.has(key) {
			continue
		}
		tmp, err := StageTemp(r.o.ConfigFile, data, func(tmp string) error {
			vctx, cancel := context.WithTimeout(ctx, r.o.ValidateTimeout)
			defer cancel()
			return checkFile(vctx, r.o.NutcrackerBin, tmp, r.o.ConfigFile)
		})
		if err != nil {
			errs = append(errs, fmt.Errorf("prestage: %w", err))
			continue
		}
		r.stage.add(key, data, tmp)
	}
	n := r.stage.len()
	r.log.Debug("prestaged configs", "candidates", len(candidates), "staged", n, "errors", len(errs))
	return n, errors.Join(errs...)
}

// stager holds the prestaged files. Its mutex is a leaf lock: held only
// while the map is read or changed, never across I/O other than removing
// files it drops.
type stager struct {
	mu    sync.Mutex
	files map[string]stagedFile // by the SHA-256 of the content
}

type stagedFile struct {
	data []byte
	path string
}

func (s *stager) has(key string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.files[key]
	return ok
}

func (s *stager) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.files)
}

func (s *stager) add(key string, data []byte, path string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.files == nil {
		s.files = map[string]stagedFile{}
	}
	if old, ok := s.files[key]; ok {
		os.Remove(old.path) // a concurrent Prestage staged it too
	}
	s.files[key] = stagedFile{data: data, path: path}
}

// take hands the staged file holding exactly data to the caller, who then
// owns (renames or removes) it; "" when none does.
func (s *stager) take(data []byte) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	key := sha(data)
	f, ok := s.files[key]
	if !ok || !bytes.Equal(f.data, data) {
		return ""
	}
	delete(s.files, key)
	return f.path
}

// keepOnly removes the staged files whose keys are not in want.
func (s *stager) keepOnly(want map[string][]byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for key, f := range s.files {
		if _, ok := want[key]; !ok {
			os.Remove(f.path)
			delete(s.files, key)
		}
	}
}

// discard removes every staged file.
func (s *stager) discard() { s.keepOnly(nil) }
