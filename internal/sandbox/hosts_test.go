package sandbox

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestHostsRemovesExactlyItsLines(t *testing.T) {
	for _, orig := range []string{
		"127.0.0.1 localhost\n# keep me\n\n10.0.0.1 other.test\n",
		"127.0.0.1 localhost", // no final newline
		"",
	} {
		path := filepath.Join(t.TempDir(), "hosts")
		if err := os.WriteFile(path, []byte(orig), 0o644); err != nil {
			t.Fatal(err)
		}
		h, err := NewHosts(path, "rca-abc.test")
		if err != nil {
			t.Fatal(err)
		}
		n1, err := h.Add("r1", "127.0.77.11")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := h.Add("R2", "127.0.77.12"); err != nil {
			t.Fatal(err)
		}
		// Someone else adds a line meanwhile: it stays.
		f, _ := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
		f.WriteString("10.9.9.9 theirs.test\n")
		f.Close()
		b, _ := os.ReadFile(path)
		if n1 != "r1.rca-abc.test" || !strings.Contains(string(b), "127.0.77.11 r1.rca-abc.test # rca-sandbox rca-abc.test\n") ||
			!strings.Contains(string(b), "127.0.77.12 r2.rca-abc.test") {
			t.Fatalf("name %q, file:\n%s", n1, b)
		}
		if err := h.Close(); err != nil {
			t.Fatal(err)
		}
		b, _ = os.ReadFile(path)
		want := orig
		if want != "" && !strings.HasSuffix(want, "\n") {
			want += "\n"
		}
		want += "10.9.9.9 theirs.test\n"
		if string(b) != want {
			t.Fatalf("after Close:\n%q\nwant\n%q", b, want)
		}
	}
	if _, err := NewHosts("/nonexistent/hosts", "rca.test"); err == nil {
		t.Fatal("no error for a hosts file that cannot be opened")
	}
	if _, err := NewHosts("/etc/hosts", "Bad Domain"); err == nil {
		t.Fatal("no error for a bad domain")
	}
}
