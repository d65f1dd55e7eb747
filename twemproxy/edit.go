package twemproxy

import (
	"bytes"
	"fmt"
	"reflect"
	"sort"
	"unicode/utf8"

	"gopkg.in/yaml.v3"

	"github.com/seed42ef8afe/redis-consul-agent/internal/addr"
)

// Change is one server moved to a new master address by a rewrite.
type Change struct {
	Pool  string
	Index int    // position in the pool's servers list, from 0
	Name  string // the server name, which is the master name
	From  string // old address, host:port as the truth writes it
	To    string
	Line  int // line of the entry in the file
}

// String is the change as a log line shows it: pool/name from -> to.
func (c Change) String() string {
	return fmt.Sprintf("%s/%s %s -> %s", c.Pool, c.Name, c.From, c.To)
}

// splice replaces src[start:end] with text.
type splice struct {
	start, end int
	text       string
}

// Edit returns src with the host:port of every server whose name is a key of
// masters replaced by that master's address ("host:port", IPv6 in brackets).
// Weights, names, comments, key order, anchors, quoting and every other byte
// are kept: yaml.v3 only locates the scalars, and the change is a byte splice
// of the original text. Re-encoding the tree would reformat the operator's
// file, and the contract is that a failover changes one address and nothing
// else. The result is parsed again and compared with the intended tree, so an
// in-place edit that would change anything else is refused with an error.
//
// When nothing changes, Edit returns src itself and no changes. Errors name
// the pool, the server and the problem; nothing is returned with them.
func Edit(src []byte, masters map[string]string) (out []byte, changed []Change, err error) {
	doc, err := parseDoc(src)
	if err != nil {
		return nil, nil, err
	}
	entries, err := poolEntries(doc)
	if err != nil {
		return nil, nil, err
	}
	type edit struct {
		node *yaml.Node
		span serverSpan
		addr string // twemproxy form
	}
	var edits []edit
	seen := map[*yaml.Node]bool{}
	for _, e := range entries {
		items, err := serverNodes(e)
		if err != nil {
			return nil, nil, err
		}
		for i, n := range items {
			s, span, err := parseServerNode(e.name, i, n)
			if err != nil {
				return nil, nil, err
			}
			want, ok := masters[s.Name]
			if !ok || s.Name == "" {
				continue
			}
			if addr.Same(want, s.Addr()) {
				continue
			}
			to, err := addr.Twemproxy(want)
			if err != nil {
				return nil, nil, fmt.Errorf("pool %q: server %d %q: master %w", e.name, i+1, s.Name, err)
			}
			changed = append(changed, Change{Pool: e.name, Index: i, Name: s.Name, From: s.Addr(), To: addr.Normalize(to), Line: n.Line})
			if !seen[n] {
				seen[n] = true
				edits = append(edits, edit{node: n, span: span, addr: to})
			}
		}
	}
	if len(edits) == 0 {
		return src, nil, nil
	}

	lines := lineStarts(src)
	splices := make([]splice, 0, len(edits))
	for _, ed := range edits {
		start, err := valueStart(src, lines, ed.node)
		if err != nil {
			return nil, nil, fmt.Errorf("server %q (line %d): %w", ed.node.Value, ed.node.Line, err)
		}
		// The text up to the end of host:port must be the value verbatim:
		// true for plain scalars and for quoted ones without escapes there.
		prefix := ed.node.Value[:ed.span.end]
		if !bytes.HasPrefix(src[start:], []byte(prefix)) {
			return nil, nil, fmt.Errorf("server %q (line %d): cannot edit in place (escape sequences or line breaks before the address); write it as a plain scalar", ed.node.Value, ed.node.Line)
		}
		splices = append(splices, splice{start: start + ed.span.start, end: start + ed.span.end, text: ed.addr})
		ed.node.Value = ed.node.Value[:ed.span.start] + ed.addr + ed.node.Value[ed.span.end:]
	}
	out = applySplices(src, splices)
	if err := sameTree(doc, out); err != nil {
		return nil, nil, err
	}
	return out, changed, nil
}

// applySplices returns a copy of src with non-overlapping splices applied.
func applySplices(src []byte, splices []splice) []byte {
	sort.Slice(splices, func(i, j int) bool { return splices[i].start < splices[j].start })
	var b bytes.Buffer
	b.Grow(len(src) + 64)
	at := 0
	for _, s := range splices {
		b.Write(src[at:s.start])
		b.WriteString(s.text)
		at = s.end
	}
	b.Write(src[at:])
	return b.Bytes()
}

// sameTree checks that out decodes to what the edited tree decodes to: the
// splice changed the intended values and nothing else.
func sameTree(want *yaml.Node, out []byte) error {
	got, err := parseDoc(out)
	if err != nil {
		return fmt.Errorf("in-place edit broke the yaml (%v); file left as it was", err)
	}
	var a, b any
	if err := want.Decode(&a); err != nil {
		return fmt.Errorf("decode edited tree: %w", err)
	}
	if err := got.Decode(&b); err != nil {
		return fmt.Errorf("in-place edit broke the yaml (%v); file left as it was", err)
	}
	if !reflect.DeepEqual(a, b) {
		return fmt.Errorf("in-place edit would change more than the server addresses; file left as it was")
	}
	return nil
}

// lineStarts returns the byte offset of each line's start, counting line
// breaks and skipping a leading BOM the way yaml.v3 does, so that a node's
// Line and Column map back to bytes.
func lineStarts(src []byte) []int {
	i := 0
	if bytes.HasPrefix(src, []byte("\xEF\xBB\xBF")) {
		i = 3
	}
	starts := []int{i}
	for i < len(src) {
		switch {
		case src[i] == '\r' && i+1 < len(src) && src[i+1] == '\n':
			i += 2
		case src[i] == '\r' || src[i] == '\n':
			i++
		case bytes.HasPrefix(src[i:], []byte("\u0085")), bytes.HasPrefix(src[i:], []byte("\u2028")), bytes.HasPrefix(src[i:], []byte("\u2029")):
			_, size := utf8.DecodeRune(src[i:])
			i += size
		default:
			i++
			continue
		}
		starts = append(starts, i)
	}
	return starts
}

// valueStart returns the byte offset where the characters of scalar n's value
// begin: after its anchor and tag, after the opening quote, or on the first
// content line of a block scalar.
func valueStart(src []byte, lines []int, n *yaml.Node) (int, error) {
	if n.Line < 1 || n.Line > len(lines) || n.Column < 1 {
		return 0, fmt.Errorf("position %d:%d is outside the file", n.Line, n.Column)
	}
	i := lines[n.Line-1]
	for c := 1; c < n.Column; c++ {
		if i >= len(src) {
			return 0, fmt.Errorf("position %d:%d is outside the file", n.Line, n.Column)
		}
		_, size := utf8.DecodeRune(src[i:])
		i += size
	}
	// Node properties: &anchor and !tag, each followed by blanks.
	for i < len(src) && (src[i] == '&' || src[i] == '!') {
		for i < len(src) && !isBlank(src[i]) {
			i++
		}
		for i < len(src) && isBlank(src[i]) {
			i++
		}
	}
	if i >= len(src) {
		return 0, fmt.Errorf("value at %d:%d not found", n.Line, n.Column)
	}
	switch {
	case n.Style&(yaml.DoubleQuotedStyle|yaml.SingleQuotedStyle) != 0:
		if src[i] != '"' && src[i] != '\'' {
			return 0, fmt.Errorf("quoted value at %d:%d not found", n.Line, n.Column)
		}
		return i + 1, nil
	case n.Style&(yaml.LiteralStyle|yaml.FoldedStyle) != 0:
		// Skip the header line (| or > with indicators and a comment),
		// then blank lines and the indentation of the first content line.
		for i < len(src) && src[i] != '\n' && src[i] != '\r' {
			i++
		}
		for i < len(src) && isBlank(src[i]) {
			i++
		}
		return i, nil
	}
	return i, nil
}

func isBlank(b byte) bool { return b == ' ' || b == '\t' || b == '\n' || b == '\r' }
