package haproxy

import (
	"fmt"
	"slices"
	"strings"
)

// UnknownNames checks the configured servers against what HAProxy has and
// returns, by index into servers, why each unknown one is unknown: no such
// backend, or no such server in it, with the names HAProxy does have, so an
// operator sees the typo.
func UnknownNames(servers []Server, state []ServerState) map[int]string {
	have := map[string][]string{}
	for _, s := range state {
		have[s.Backend] = append(have[s.Backend], s.Server)
	}
	out := map[int]string{}
	for i, s := range servers {
		names, ok := have[s.Backend]
		switch {
		case !ok:
			out[i] = fmt.Sprintf("HAProxy has no backend %q with servers (it has: %s)", s.Backend, list(have))
		case !slices.Contains(names, s.Server):
			out[i] = fmt.Sprintf("HAProxy's backend %q has no server %q (it has: %s)", s.Backend, s.Server, strings.Join(names, ", "))
		}
	}
	return out
}

func list(have map[string][]string) string {
	var b []string
	for k := range have {
		b = append(b, k)
	}
	slices.Sort(b)
	if len(b) == 0 {
		return "none"
	}
	return strings.Join(b, ", ")
}
