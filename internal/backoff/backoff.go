// Package backoff is the agent's one retry delay: capped exponential with
// jitter, reset on success. Every loop that retries (Sentinel links, Consul
// writes, proxy pipelines, HAProxy's runtime API) uses it, so a change of
// policy is made once.
package backoff

import (
	"math/rand/v2"
	"time"
)

// Backoff is a capped exponential backoff with jitter. Set Min and Max; the
// zero value of the counter starts at Min. Not safe for concurrent use: each
// retry loop owns its own.
type Backoff struct {
	Min, Max time.Duration
	n        int
}

// Next returns the delay before the next attempt: Min·2ⁿ capped at Max, with
// the upper half jittered so that agents do not retry in lockstep.
func (b *Backoff) Next() time.Duration {
	d := Delay(b.n, b.Min, b.Max)
	if b.n < 62 {
		b.n++
	}
	half := d / 2
	if half <= 0 {
		return d
	}
	return half + rand.N(half+1)
}

// Attempts is how many delays Next has handed out since the last Reset.
func (b *Backoff) Attempts() int { return b.n }

// Reset starts over after a success.
func (b *Backoff) Reset() { b.n = 0 }

// Delay is the un-jittered delay before retry n (0-based): lo·2ⁿ capped at hi.
func Delay(n int, lo, hi time.Duration) time.Duration {
	d := lo
	for i := 0; i < n && d < hi; i++ {
		d *= 2
	}
	return min(d, hi)
}
