// Package consulhealth is the agent's one reader of Consul's health API
// (/v1/health/service). Every reader of registrations (Sentinel discovery,
// the master handoff, the cluster view) goes through Service, so that none
// of them can take a result the ACL token filtered for a complete one.
package consulhealth

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/hashicorp/consul/api"
)

// Instance is one registered service instance as the health API returns it.
type Instance struct {
	ID      string
	Service string
	Node    string
	// Address is host:port: the service address, or the node's when the
	// service has none. Empty when the service has no port.
	Address string
	Tags    []string
	Meta    map[string]string
	// Status is the aggregate of the instance's checks (passing, warning,
	// critical, maintenance), the state Consul DNS goes by.
	Status string
	// Output is the output of the worst check, the reason an operator reads.
	Output string
	Checks api.HealthChecks
}

// Query narrows and shapes a read.
type Query struct {
	// Tag, when set, keeps only instances with that tag.
	Tag string
	// PassingOnly keeps only instances whose checks all pass.
	PassingOnly bool
	// AllowStale lets any Consul server answer (cheaper, may lag by ms).
	AllowStale bool
	// WaitIndex and WaitTime make the read a blocking query: it returns
	// when the result changed after WaitIndex or WaitTime has passed.
	WaitIndex uint64
	WaitTime  time.Duration
}

// Result is a read: the instances and the index to block on next.
type Result struct {
	Instances []Instance
	// LastIndex is the index of this result; pass it as the next WaitIndex.
	// It is 0 when Consul sent none.
	LastIndex uint64
}

// FilteredError says that Consul left out instances the ACL token may not
// read (X-Consul-Results-Filtered-By-ACLs). The instances it did return are
// in Partial: a reader may show them, but must not take them for all there is.
type FilteredError struct {
	Service string
	Partial Result
}

func (e *FilteredError) Error() string {
	return fmt.Sprintf("consul hid instances of %q the ACL token may not read (it needs service:read on %q and node:read)", e.Service, e.Service)
}

// IsFiltered reports whether err is (or wraps) a FilteredError.
func IsFiltered(err error) bool {
	var fe *FilteredError
	return errors.As(err, &fe)
}

// Service reads the instances of service. A result the ACL token filtered is
// an error (*FilteredError) carrying what was returned.
func Service(ctx context.Context, c *api.Client, service string, q Query) (Result, error) {
	opts := (&api.QueryOptions{AllowStale: q.AllowStale, WaitIndex: q.WaitIndex, WaitTime: q.WaitTime}).WithContext(ctx)
	entries, meta, err := c.Health().Service(service, q.Tag, q.PassingOnly, opts)
	if err != nil {
		return Result{LastIndex: q.WaitIndex}, fmt.Errorf("read %s from consul: %w", service, err)
	}
	res := Result{Instances: make([]Instance, 0, len(entries))}
	if meta != nil {
		res.LastIndex = meta.LastIndex
	}
	for _, e := range entries {
		if e.Service == nil {
			continue
		}
		res.Instances = append(res.Instances, convert(e))
	}
	if meta != nil && meta.ResultsFilteredByACLs {
		return res, &FilteredError{Service: service, Partial: res}
	}
	return res, nil
}

func convert(e *api.ServiceEntry) Instance {
	in := Instance{
		ID: e.Service.ID, Service: e.Service.Service, Tags: e.Service.Tags, Meta: e.Service.Meta,
		Status: e.Checks.AggregatedStatus(), Checks: e.Checks,
	}
	host := e.Service.Address
	if e.Node != nil {
		in.Node = e.Node.Node
		if host == "" {
			host = e.Node.Address
		}
	}
	if host != "" && e.Service.Port != 0 {
		in.Address = net.JoinHostPort(host, strconv.Itoa(e.Service.Port))
	}
	worst := -1
	for _, c := range e.Checks {
		if r := rank(c.Status); r > worst {
			worst, in.Output = r, c.Output
		}
	}
	return in
}

func rank(status string) int {
	switch status {
	case api.HealthPassing:
		return 0
	case api.HealthWarning:
		return 1
	case api.HealthCritical:
		return 2
	case api.HealthMaint:
		return 3
	}
	return -1
}
