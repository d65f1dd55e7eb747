package addr

import "testing"

func TestSame(t *testing.T) {
	cases := []struct {
		a, b string
		want bool
	}{
		{"127.0.0.1:6379", "127.0.0.1:6379", true},
		{"127.0.0.1:06379", "127.0.0.1:6379", true},
		{"127.0.0.1:026379", "127.0.0.1:26379", true},
		{"Cache-1.Example.:6379", "cache-1.example:6379", true},
		{"[::ffff:10.0.0.1]:6379", "10.0.0.1:6379", true},
		{"::1:6379", "[::1]:6379", true},
		{"[::1]:6379", "[0:0::1]:6379", true},
		{"127.0.0.1:6379", "127.0.0.1:6380", false},
		{"127.0.0.1:6379", "127.0.0.2:6379", false},
		{"", "", false},
		{"127.0.0.1:6379", "", false},
	}
	for _, c := range cases {
		if got := Same(c.a, c.b); got != c.want {
			t.Errorf("Same(%q, %q) = %v, want %v", c.a, c.b, got, c.want)
		}
	}
}

func TestSplit(t *testing.T) {
	good := map[string]string{
		"10.0.0.1:6379": "10.0.0.1", "::1:6379": "::1", "[::1]:6379": "::1", "redis-a:1": "redis-a",
	}
	for in, host := range good {
		h, _, err := Split(in)
		if err != nil || h != host {
			t.Errorf("Split(%q) = %q, %v; want %q", in, h, err, host)
		}
	}
	for _, in := range []string{"", "6379", ":6379", "h:0", "h:65536", "h:x", "[]:1", "h:"} {
		if _, _, err := Split(in); err == nil {
			t.Errorf("Split(%q): no error", in)
		}
	}
}

func TestTwemproxy(t *testing.T) {
	for in, want := range map[string]string{"[::1]:6379": "::1:6379", "10.0.0.1:06379": "10.0.0.1:6379"} {
		if got, err := Twemproxy(in); err != nil || got != want {
			t.Errorf("Twemproxy(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"a b:1", "a#b:1", "x"} {
		if _, err := Twemproxy(in); err == nil {
			t.Errorf("Twemproxy(%q): no error", in)
		}
	}
}

func TestJoin(t *testing.T) {
	if got, err := Join("::1", "06379"); err != nil || got != "[::1]:6379" {
		t.Errorf("Join = %q, %v", got, err)
	}
	for _, c := range [][2]string{{"", "1"}, {"a@b", "1"}, {"h", "0"}, {"h", "123456"}} {
		if _, err := Join(c[0], c[1]); err == nil {
			t.Errorf("Join(%q, %q): no error", c[0], c[1])
		}
	}
}
