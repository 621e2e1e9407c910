// Package fake is a scriptable in-memory backend for tests: jobs move
// through states when the test says so, queries are counted, and failures
// can be injected.
package fake

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/tether-hpc/tether/backends"
)

// Backend is an in-memory scheduler.
type Backend struct {
	mu   sync.Mutex
	jobs map[backends.JobID]backends.JobStatus
	next int
	fail error
	// failSubmit and failCancel fail only those calls; lose makes the
	// next submit take the job and lose the answer.
	failSubmit, failCancel error
	lose                   bool
	Queries                atomic.Int64 // Query calls
	Submits                atomic.Int64
	Cancels                atomic.Int64
	// Requests holds every submitted request.
	Requests []backends.JobRequest
}

// New returns an empty fake scheduler.
func New() *Backend { return &Backend{jobs: map[backends.JobID]backends.JobStatus{}} }

// Submit adds a pending job.
func (b *Backend) Submit(_ context.Context, req backends.JobRequest) (backends.JobID, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.fail != nil {
		return "", b.fail
	}
	if b.failSubmit != nil {
		return "", b.failSubmit
	}
	b.next++
	id := backends.JobID(strconv.Itoa(b.next))
	b.jobs[id] = backends.JobStatus{ID: id, State: backends.Pending, Native: "PENDING"}
	b.Requests = append(b.Requests, req)
	b.Submits.Add(1)
	if b.lose {
		b.lose = false
		return "", fmt.Errorf("%w: the answer was lost", backends.ErrUnavailable)
	}
	return id, nil
}

// Query returns the known jobs among ids.
func (b *Backend) Query(ctx context.Context, ids []backends.JobID) (map[backends.JobID]backends.JobStatus, error) {
	b.Queries.Add(1)
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.fail != nil {
		return nil, b.fail
	}
	out := make(map[backends.JobID]backends.JobStatus, len(ids))
	for _, id := range ids {
		if st, ok := b.jobs[id]; ok {
			out[id] = st
		}
	}
	return out, nil
}

// Cancel marks a job cancelled.
func (b *Backend) Cancel(_ context.Context, id backends.JobID) error {
	b.Cancels.Add(1)
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.fail != nil {
		return b.fail
	}
	if b.failCancel != nil {
		return b.failCancel
	}
	st, ok := b.jobs[id]
	if !ok {
		return nil // gone: nothing to cancel
	}
	if !st.State.Terminal() {
		st.State, st.Native = backends.Cancelled, "CANCELLED"
		b.jobs[id] = st
	}
	return nil
}

// Set changes a job's state (and exit code when code >= 0).
func (b *Backend) Set(id backends.JobID, state backends.State, code int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	st := b.jobs[id]
	st.ID, st.State, st.Native = id, state, string(state)
	if code >= 0 {
		st.ExitCode = &code
	}
	b.jobs[id] = st
}

// Put stores a full status.
func (b *Backend) Put(st backends.JobStatus) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.jobs[st.ID] = st
}

// Forget makes a job vanish from the scheduler.
func (b *Backend) Forget(id backends.JobID) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.jobs, id)
}

// Fail makes every call fail with err until Fail(nil).
func (b *Backend) Fail(err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.fail = err
}

// FailSubmit makes submits fail with err until FailSubmit(nil).
func (b *Backend) FailSubmit(err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.failSubmit = err
}

// FailCancel makes cancels fail with err until FailCancel(nil).
func (b *Backend) FailCancel(err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.failCancel = err
}

// LoseNextAnswer makes the next submit take the job and lose the answer.
func (b *Backend) LoseNextAnswer() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.lose = true
}

// FindByTag implements backends.Finder over the submitted requests.
func (b *Backend) FindByTag(_ context.Context, tag string) (backends.JobID, bool, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.fail != nil {
		return "", false, b.fail
	}
	for i, r := range b.Requests {
		if r.Tag == tag {
			id := backends.JobID(strconv.Itoa(i + 1))
			if _, ok := b.jobs[id]; ok {
				return id, true, nil
			}
		}
	}
	return "", false, nil
}
