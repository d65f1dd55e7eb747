package twemproxy

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestValidate(t *testing.T) {
	bin := nutcrackerBin(t)
	ctx := context.Background()
	dir := t.TempDir()
	if err := Validate(ctx, bin, dir, []byte(twoPools)); err != nil {
		t.Errorf("good config: %v", err)
	}
	bad := strings.Replace(twoPools, "hash: fnv1a_64", "hash: sha1", 1)
	err := Validate(ctx, bin, dir, []byte(bad))
	var rej *RejectedError
	if !errors.As(err, &rej) {
		t.Fatalf("bad config: %v", err)
	}
	if !strings.Contains(rej.Output, "syntax is invalid") || len(rej.Hints) != 1 || !strings.Contains(rej.Hints[0], `hash "sha1" is not one of`) {
		t.Errorf("rejection: %+v", rej)
	}
	if !strings.Contains(err.Error(), "nutcracker --test-conf rejected") {
		t.Errorf("message: %v", err)
	}
	assertNoTemp(t, dir)

	if err := Validate(ctx, "/nonexistent/nutcracker", dir, []byte(twoPools)); err == nil || errors.As(err, &rej) {
		t.Errorf("missing binary: %v", err)
	}
}

func TestCheckFileTimeout(t *testing.T) {
	path := filepath.Join(t.TempDir(), "slow.sh")
	if err := os.WriteFile(path, []byte("#!/bin/sh\nexec sleep 30\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := CheckFile(ctx, path, "/dev/null"); err == nil || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("slow validator: %v", err)
	}
	if time.Since(start) > 3*time.Second {
		t.Errorf("timeout not honoured")
	}
}

func TestHints(t *testing.T) {
	for _, tc := range []struct{ name, src, want string }{
		{"unknown key", "a:\n  listen: x:1\n  hashing: md5\n  servers:\n   - 1.2.3.4:5:1 m\n", `pool "a" line 3: unknown key "hashing"`},
		{"distribution", "a:\n  listen: x:1\n  distribution: rr\n  servers:\n   - 1.2.3.4:5:1 m\n", `distribution "rr" is not one of ketama`},
		{"flow", "a:\n  listen: x:1\n  servers: [1.2.3.4:5:1 m]\n", "flow collections"},
		{"alias", "a: &x\n  listen: x:1\n  servers:\n   - 1.2.3.4:5:1 m\nb: *x\n", "anchors and aliases"},
		{"two spaces", "a:\n  listen: x:1\n  servers:\n   - '1.2.3.4:5:1  m'\n", "one space between"},
		{"hash tag", "a:\n  listen: x:1\n  hash_tag: \"{\"\n  servers:\n   - 1.2.3.4:5:1 m\n", "must be two characters"},
		{"missing", "a:\n  redis: true\n", `pool "a": listen is missing`},
	} {
		hints := Hints([]byte(tc.src))
		if !strings.Contains(strings.Join(hints, "\n"), tc.want) {
			t.Errorf("%s: hints %q lack %q", tc.name, hints, tc.want)
		}
	}
	if h := Hints([]byte(twoPools)); len(h) != 0 {
		t.Errorf("hints for a good file: %q", h)
	}
}

func TestPing(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go servePong(l)
	ctx := context.Background()
	p := Pool{Name: "a", Listen: l.Addr().String(), Redis: true}
	if err := Ping(ctx, p, time.Second); err != nil {
		t.Errorf("plain: %v", err)
	}
	p.auth = "secret"
	if err := Ping(ctx, p, time.Second); err != nil {
		t.Errorf("with auth: %v", err)
	}

	// A proxy that refuses the password: the error says so, without it.
	l2, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	go func() {
		c, err := l2.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		buf := make([]byte, 256)
		_, _ = c.Read(buf)
		_, _ = c.Write([]byte("-ERR invalid password\r\n-NOAUTH Authentication required\r\n"))
	}()
	p2 := Pool{Name: "b", Listen: l2.Addr().String(), Redis: true, auth: "secret"}
	if err := Ping(ctx, p2, time.Second); err == nil || !strings.Contains(err.Error(), "AUTH refused: -ERR invalid password") || strings.Contains(err.Error(), "secret") {
		t.Errorf("refused auth: %v", err)
	}

	closed := Pool{Name: "c", Listen: freeAddr(t), Redis: true}
	if err := Ping(ctx, closed, time.Second); err == nil {
		t.Error("closed port answered")
	}
	// A memcached pool is only connected to.
	mc := Pool{Name: "d", Listen: l.Addr().String()}
	if err := Ping(ctx, mc, time.Second); err != nil {
		t.Errorf("memcached pool: %v", err)
	}
}

func TestWaitPoolsStopsWhenTheChildExits(t *testing.T) {
	exited := make(chan struct{})
	time.AfterFunc(20*time.Millisecond, func() { close(exited) })
	start := time.Now()
	_, _, err := waitPools(context.Background(), []Pool{{Name: "a", Listen: freeAddr(t), Redis: true}}, 5*time.Second, exited)
	if !errors.Is(err, errChildExited) || time.Since(start) > time.Second {
		t.Errorf("err %v after %s", err, time.Since(start))
	}
	_, _, err = waitPools(context.Background(), []Pool{{Name: "a", Listen: freeAddr(t), Redis: true}}, 50*time.Millisecond, nil)
	if err == nil || !strings.Contains(err.Error(), `pool "a" at`) {
		t.Errorf("timeout: %v", err)
	}
}
