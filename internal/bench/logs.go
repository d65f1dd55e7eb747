package bench

import (
	"bufio"
	"os"
	"strings"
	"time"
)

// The agent logs what each step of a reaction took. The benchmark reads
// those lines for the breakdown under figure 1: where the time goes inside
// the agent. They are the agent's own figures, reported as such; a line
// that does not parse is skipped.

// logLine is one hclog text line: its time and its key=value pairs.
type logLine struct {
	at  time.Time
	msg string
	kv  map[string]string
}

// readLog parses the hclog text lines of path that contain every one of
// words.
func readLog(path string, words ...string) []logLine {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []logLine
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
next:
	for sc.Scan() {
		line := sc.Text()
		for _, w := range words {
			if !strings.Contains(line, w) {
				continue next
			}
		}
		ts, rest, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		at, err := time.Parse("2006-01-02T15:04:05.000Z0700", ts)
		if err != nil {
			continue
		}
		l := logLine{at: at, kv: map[string]string{}}
		// "[INFO]  name: message: k=v k="quoted v" ..."
		if i := strings.Index(rest, ": "); i >= 0 {
			rest = rest[i+2:]
		}
		msg, pairs, _ := strings.Cut(rest, ": ")
		l.msg = msg
		for pairs != "" {
			k, v, ok := strings.Cut(pairs, "=")
			if !ok {
				break
			}
			if strings.HasPrefix(v, `"`) {
				end := strings.Index(v[1:], `"`)
				if end < 0 {
					break
				}
				l.kv[k] = v[1 : end+1]
				pairs = strings.TrimPrefix(v[end+2:], " ")
				continue
			}
			val, more, _ := strings.Cut(v, " ")
			l.kv[k] = val
			pairs = more
		}
		out = append(out, l)
	}
	return out
}

// durationsOf collects the duration in key of lines at or after since.
func durationsOf(lines []logLine, key string, since time.Time) durations {
	var d durations
	for _, l := range lines {
		if l.at.Before(since) {
			continue
		}
		if v, err := time.ParseDuration(l.kv[key]); err == nil {
			d.add(v)
		}
	}
	return d
}
