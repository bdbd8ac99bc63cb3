package queue

import (
	"time"

	"github.com/riverqueue/river/rivertype"
)

// maxRetryBackoff caps the doubling so that a large attempt count cannot
// overflow time.Duration or park a job for days.
const maxRetryBackoff = time.Hour

// backoffPolicy is a river.ClientRetryPolicy: the first retry comes base
// after the first failure, and each further one waits twice as long as the
// one before (base, 2*base, 4*base, ...), capped at maxRetryBackoff.
type backoffPolicy struct {
	base time.Duration
	now  func() time.Time
}

// NextRetry implements river.ClientRetryPolicy. job.Errors holds the errors
// of earlier attempts only, so it is empty after the first failure.
func (p *backoffPolicy) NextRetry(job *rivertype.JobRow) time.Time {
	return p.now().UTC().Add(backoff(p.base, len(job.Errors)))
}

// backoff is base doubled once per earlier failure, capped at
// maxRetryBackoff.
func backoff(base time.Duration, earlierFailures int) time.Duration {
	d := base
	for range earlierFailures {
		if d >= maxRetryBackoff/2 {
			return maxRetryBackoff
		}
		d *= 2
	}
	return min(d, maxRetryBackoff)
}
