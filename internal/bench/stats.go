package bench

import (
	"math"
	"slices"
	"time"
)

// Summary is the spread of one figure over repeated runs.
type Summary struct {
	N      int     `json:"n"`
	P50    float64 `json:"p50"`
	P95    float64 `json:"p95"`
	Min    float64 `json:"min"`
	Max    float64 `json:"max"`
	Failed int     `json:"failed,omitempty"` // runs that produced no value (timeout, lost race, unseen)
	Unit   string  `json:"unit"`
}

// summarize computes the nearest-rank percentiles of xs, which it sorts.
func summarize(xs []float64, unit string) Summary {
	s := Summary{N: len(xs), Unit: unit}
	if len(xs) == 0 {
		s.P50, s.P95, s.Min, s.Max = math.NaN(), math.NaN(), math.NaN(), math.NaN()
		return s
	}
	slices.Sort(xs)
	s.Min, s.Max = xs[0], xs[len(xs)-1]
	s.P50, s.P95 = percentile(xs, 50), percentile(xs, 95)
	return s
}

// percentile is the nearest-rank percentile of sorted xs: with few samples
// p95 is the largest one, which is the honest reading of a small n.
func percentile(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return math.NaN()
	}
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	rank = min(max(rank, 1), len(sorted))
	return sorted[rank-1]
}

// ms converts a duration to float milliseconds.
func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// durations collects millisecond samples; a failed run is counted apart.
type durations struct {
	xs     []float64
	failed int
}

func (d *durations) add(v time.Duration) { d.xs = append(d.xs, ms(v)) }
func (d *durations) fail()               { d.failed++ }

func (d durations) summary() Summary {
	s := summarize(slices.Clone(d.xs), "ms")
	s.Failed = d.failed
	return s
}

// values collects samples in any unit.
type values struct {
	xs     []float64
	failed int
	unit   string
}

func (v *values) add(x float64) { v.xs = append(v.xs, x) }

func (v values) summary() Summary {
	s := summarize(slices.Clone(v.xs), v.unit)
	s.Failed = v.failed
	return s
}
