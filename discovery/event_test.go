package discovery

import (
	"errors"
	"strings"
	"testing"
)

func TestParseEvent(t *testing.T) {
	tests := []struct {
		name, channel, payload string
		want                   Event
		wantErr                string
	}{
		{
			name: "switch-master", channel: "+switch-master", payload: "mymaster 10.0.0.1 6379 10.0.0.2 6380",
			want: Event{Type: "+switch-master", MasterName: "mymaster", OldMasterAddr: "10.0.0.1:6379", MasterAddr: "10.0.0.2:6380"},
		},
		{
			name: "switch-master ipv6", channel: "+switch-master", payload: "m ::1 6379 fe80::1 6380",
			want: Event{Type: "+switch-master", MasterName: "m", OldMasterAddr: "[::1]:6379", MasterAddr: "[fe80::1]:6380"},
		},
		{
			name: "switch-master short", channel: "+switch-master", payload: "mymaster 10.0.0.1 6379 10.0.0.2",
			wantErr: "got 4 fields",
		},
		{
			name: "switch-master bad port", channel: "+switch-master", payload: "mymaster 10.0.0.1 6379 10.0.0.2 63x0",
			wantErr: `new address: invalid port "63x0"`,
		},
		{
			name: "switch-master port range", channel: "+switch-master", payload: "mymaster 10.0.0.1 0 10.0.0.2 6380",
			wantErr: "old address: port \"0\" is not in 1-65535",
		},
		{
			name: "sdown master", channel: "+sdown", payload: "master mymaster 10.0.0.1 6379",
			want: Event{Type: "+sdown", InstanceType: "master", InstanceName: "mymaster", InstanceAddr: "10.0.0.1:6379",
				MasterName: "mymaster", MasterAddr: "10.0.0.1:6379"},
		},
		{
			name: "odown with quorum", channel: "+odown", payload: "master mymaster 10.0.0.1 6379 #quorum 2/2",
			want: Event{Type: "+odown", InstanceType: "master", InstanceName: "mymaster", InstanceAddr: "10.0.0.1:6379",
				MasterName: "mymaster", MasterAddr: "10.0.0.1:6379", Extra: "#quorum 2/2"},
		},
		{
			name: "sdown replica", channel: "-sdown", payload: "slave 10.0.0.3:6379 10.0.0.3 6379 @ mymaster 10.0.0.1 6379",
			want: Event{Type: "-sdown", InstanceType: "slave", InstanceName: "10.0.0.3:6379", InstanceAddr: "10.0.0.3:6379",
				MasterName: "mymaster", MasterAddr: "10.0.0.1:6379"},
		},
		{
			name: "convert-to-slave", channel: "+convert-to-slave", payload: "slave 10.0.0.1:6379 10.0.0.1 6379 @ mymaster 10.0.0.2 6379",
			want: Event{Type: "+convert-to-slave", InstanceType: "slave", InstanceName: "10.0.0.1:6379", InstanceAddr: "10.0.0.1:6379",
				MasterName: "mymaster", MasterAddr: "10.0.0.2:6379"},
		},
		{
			name: "role-change", channel: "+role-change", payload: "slave 10.0.0.1:6379 10.0.0.1 6379 @ mymaster 10.0.0.2 6379 new reported role is master",
			want: Event{Type: "+role-change", InstanceType: "slave", InstanceName: "10.0.0.1:6379", InstanceAddr: "10.0.0.1:6379",
				MasterName: "mymaster", MasterAddr: "10.0.0.2:6379", Extra: "new reported role is master"},
		},
		{
			name: "sentinel instance", channel: "+config-update-from", payload: "sentinel 3fa2 10.0.0.9 26379 @ mymaster 10.0.0.1 6379",
			want: Event{Type: "+config-update-from", InstanceType: "sentinel", InstanceName: "3fa2", InstanceAddr: "10.0.0.9:26379",
				MasterName: "mymaster", MasterAddr: "10.0.0.1:6379"},
		},
		{
			name: "failover-end", channel: "+failover-end", payload: "master mymaster 10.0.0.1 6379",
			want: Event{Type: "+failover-end", InstanceType: "master", InstanceName: "mymaster", InstanceAddr: "10.0.0.1:6379",
				MasterName: "mymaster", MasterAddr: "10.0.0.1:6379"},
		},
		{
			name: "new-epoch", channel: "+new-epoch", payload: "7",
			want: Event{Type: "+new-epoch", Extra: "7"},
		},
		{
			name: "tilt", channel: "+tilt", payload: "#tilt mode entered",
			want: Event{Type: "+tilt", Extra: "#tilt mode entered"},
		},
		{name: "empty", channel: "+sdown", payload: "  ", wantErr: "empty sentinel message"},
		{name: "unknown type", channel: "+sdown", payload: "cluster x 10.0.0.1 6379", wantErr: `unknown instance type "cluster"`},
		{name: "short", channel: "+sdown", payload: "master x 10.0.0.1", wantErr: "got 3 fields"},
		{name: "short master part", channel: "+sdown", payload: "slave a 10.0.0.1 1 @ m 10.0.0.2", wantErr: "@ <master-name>"},
		{name: "bracketed host", channel: "+sdown", payload: "master x [::1] 6379", wantErr: `invalid host "[::1]"`},
		{name: "bad channel", channel: "", payload: "x", wantErr: "malformed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseEvent(tt.channel, tt.payload)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseEvent(%q, %q) error = %v, want it to contain %q", tt.channel, tt.payload, err, tt.wantErr)
				}
				if !errors.Is(err, ErrMalformedEvent) && !errors.Is(err, ErrEmptyEvent) {
					t.Fatalf("error %v wraps neither ErrMalformedEvent nor ErrEmptyEvent", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseEvent(%q, %q): %v", tt.channel, tt.payload, err)
			}
			if got != tt.want {
				t.Fatalf("ParseEvent(%q, %q)\n got %+v\nwant %+v", tt.channel, tt.payload, got, tt.want)
			}
			back, err := ParseEvent(got.Type, got.Payload())
			if err != nil || back != got {
				t.Fatalf("round trip of %q: got %+v, %v", got.Payload(), back, err)
			}
		})
	}
}

// FuzzParseEvent checks that ParseEvent never panics and that what it
// accepts renders back (Payload) into the same event.
func FuzzParseEvent(f *testing.F) {
	seeds := [][2]string{
		{"+switch-master", "mymaster 127.0.0.1 6379 127.0.0.2 6379"},
		{"+sdown", "master mymaster 127.0.0.1 6379"},
		{"+odown", "master mymaster 127.0.0.1 6379 #quorum 2/2"},
		{"-sdown", "slave 127.0.0.3:6379 127.0.0.3 6379 @ mymaster 127.0.0.1 6379"},
		{"+role-change", "slave 127.0.0.1:6379 127.0.0.1 6379 @ mymaster 127.0.0.2 6379 new reported role is master"},
		{"+new-epoch", "12"},
		{"+tilt", "#tilt mode entered"},
		{"+switch-master", "m ::1 1 fe80::1%eth0 2"},
		{"+sdown", "master m h 06379 @ m h 6379"},
	}
	for _, s := range seeds {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, channel, payload string) {
		e, err := ParseEvent(channel, payload)
		if err != nil {
			return
		}
		back, err := ParseEvent(e.Type, e.Payload())
		if err != nil {
			t.Fatalf("ParseEvent(%q, %q) = %+v, but its payload %q does not parse: %v", channel, payload, e, e.Payload(), err)
		}
		if back != e {
			t.Fatalf("round trip of %q %q:\n got %+v\nwant %+v", channel, payload, back, e)
		}
	})
}
