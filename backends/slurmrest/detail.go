package slurmrest

import (
	"context"
	"strconv"
	"sync"
	"time"

	"github.com/tether-hpc/tether/backends"
)

// Live detail on v0.0.40+: jobs/state is cheap (about 32 bytes a job) but
// gives neither the pending reason nor the expected start, and a full
// job list at 5,000 held jobs costs megabytes. So each poll reads the
// full record of at most detailPerPoll pending jobs, by id, and keeps what
// it said: jobs never read first (in submit order), then the one read
// longest ago, once its detail is older than detailMaxAge. A poll costs
// at most one request more than jobs/state, whatever the queue holds; a
// newly pending job's reason (DependencyNeverSatisfied, …) is known at its
// first poll when it is the only new one.
const (
	detailPerPoll = 1
	detailMaxAge  = 2 * time.Minute
	// detailForget drops detail of jobs no poll has asked about since.
	detailForget = time.Hour
)

// liveDetail is the detail read so far, per job.
type liveDetail struct {
	mu   sync.Mutex
	jobs map[backends.JobID]detailEntry
	now  func() time.Time
}

type detailEntry struct {
	reason   string
	expected time.Time
	read     time.Time // when the record was read
	asked    time.Time // when a poll last asked about the job
}

func newLiveDetail() *liveDetail {
	return &liveDetail{jobs: map[backends.JobID]detailEntry{}, now: time.Now}
}

// pick chooses the pending jobs of a poll whose record to read.
func (d *liveDetail) pick(out map[backends.JobID]backends.JobStatus) []backends.JobID {
	d.mu.Lock()
	defer d.mu.Unlock()
	now := d.now()
	type cand struct {
		id   backends.JobID
		num  uint64
		read time.Time
	}
	var best []cand
	better := func(a, b cand) bool { // never read first, then read longest ago, then oldest job
		if !a.read.Equal(b.read) {
			return a.read.Before(b.read)
		}
		return a.num < b.num
	}
	for id, st := range out {
		if st.State != backends.Pending {
			continue
		}
		e := d.jobs[id]
		if !e.read.IsZero() && now.Sub(e.read) < detailMaxAge {
			continue
		}
		n, _ := strconv.ParseUint(string(id), 10, 64)
		c := cand{id, n, e.read}
		switch {
		case len(best) < detailPerPoll:
			best = append(best, c)
		default:
			worst := 0
			for i := range best {
				if better(best[worst], best[i]) {
					worst = i
				}
			}
			if better(c, best[worst]) {
				best[worst] = c
			}
		}
	}
	ids := make([]backends.JobID, len(best))
	for i, c := range best {
		ids[i] = c.id
	}
	return ids
}

// store keeps a job's detail as its full record gave it.
func (d *liveDetail) store(id backends.JobID, st backends.JobStatus) {
	d.mu.Lock()
	defer d.mu.Unlock()
	now := d.now()
	d.jobs[id] = detailEntry{reason: st.Reason, expected: st.ExpectedStart, read: now, asked: now}
}

// apply fills the pending jobs of a poll with their detail, and forgets
// jobs that are no longer pending or no poll asks about.
func (d *liveDetail) apply(out map[backends.JobID]backends.JobStatus) {
	d.mu.Lock()
	defer d.mu.Unlock()
	now := d.now()
	for id, st := range out {
		e, ok := d.jobs[id]
		if !ok {
			continue
		}
		if st.State != backends.Pending {
			delete(d.jobs, id)
			continue
		}
		e.asked = now
		d.jobs[id] = e
		if st.Reason == "" {
			st.Reason = e.reason
		}
		if st.ExpectedStart.IsZero() {
			st.ExpectedStart = e.expected
		}
		out[id] = st
	}
	for id, e := range d.jobs {
		if now.Sub(e.asked) > detailForget {
			delete(d.jobs, id)
		}
	}
}

// pendingDetail reads the full records of a few pending jobs and fills
// every pending job of the poll with the detail known. A failed read only
// leaves the detail out: the states are what the poll is for.
func (a api4x) pendingDetail(ctx context.Context, out map[backends.JobID]backends.JobStatus) {
	if a.detail == nil {
		return
	}
	for _, id := range a.detail.pick(out) {
		j, found, err := a.v.getJob(ctx, string(id))
		if err != nil || !found {
			continue
		}
		if st := j.status(); st.State == backends.Pending {
			a.detail.store(id, st)
		}
	}
	a.detail.apply(out)
}
