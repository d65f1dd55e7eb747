package consulreg

import (
	"testing"

	"github.com/hashicorp/consul/api"
)

// The statuses are Consul's own words: a Health written with them must mean
// to Consul what it means here.
func TestStatusesAreConsuls(t *testing.T) {
	for got, want := range map[string]string{Passing: api.HealthPassing, Warning: api.HealthWarning, Critical: api.HealthCritical} {
		if got != want {
			t.Errorf("status %q, Consul says %q", got, want)
		}
	}
}
