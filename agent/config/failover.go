package config

import (
	"errors"
	"fmt"

	"gopkg.in/yaml.v3"
)

// Failover says what the agent acts on during a Sentinel failover.
type Failover struct {
	// ActOn is ActOnPromotion (the replica the leader Sentinel selected,
	// the moment it answers ROLE master) or ActOnAnnouncement (the
	// +switch-master, or a Sentinel majority).
	ActOn string `yaml:"act_on"`
	// PauseWrites makes the agent beside an outgoing master that is still
	// alive pause its writes (CLIENT PAUSE WRITE) until Sentinel makes it a
	// replica or the failover aborts, so that no acknowledged write is lost
	// in a planned failover. A Flag so that a bad value names its key.
	PauseWrites Flag `yaml:"pause_writes"`
	// PauseSlice is the length of each CLIENT PAUSE, renewed every third
	// of it: how long Redis stays paused after an agent that dies.
	PauseSlice Duration `yaml:"pause_slice"`
}

// Values of failover.act_on.
const (
	ActOnPromotion    = "promotion"
	ActOnAnnouncement = "announcement"
)

// Flag is a YAML boolean that only true and false spell: "yes please" is
// an error, never false.
type Flag bool

// UnmarshalYAML decodes the failover section key by key, so that a bad
// value is reported with its line and its key (failover.pause_writes),
// and an unknown key as in every other section.
func (f *Failover) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.MappingNode {
		return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: failover: want a mapping", n.Line)}}
	}
	var errs []string
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		var err error
		switch k.Value {
		case "act_on":
			err = v.Decode(&f.ActOn)
		case "pause_slice":
			err = f.PauseSlice.UnmarshalYAML(v)
		case "pause_writes":
			if v.Kind != yaml.ScalarNode || v.Tag != "!!bool" || (v.Value != "true" && v.Value != "false") {
				errs = append(errs, fmt.Sprintf("line %d: failover.pause_writes: %q: want true or false", v.Line, v.Value))
				continue
			}
			f.PauseWrites = Flag(v.Value == "true")
		default:
			errs = append(errs, fmt.Sprintf("line %d: unknown key %q in failover", k.Line, k.Value))
			continue
		}
		var te *yaml.TypeError
		if errors.As(err, &te) {
			errs = append(errs, te.Errors...)
		} else if err != nil {
			errs = append(errs, fmt.Sprintf("line %d: failover.%s: %v", v.Line, k.Value, err))
		}
	}
	if len(errs) > 0 {
		return &yaml.TypeError{Errors: errs}
	}
	return nil
}
