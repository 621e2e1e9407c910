package monitor

import (
	"fmt"
	"time"

	"github.com/tether-hpc/tether/backends"
	"github.com/tether-hpc/tether/schema"
)

// Stuck reasons: a bounded set, used as a metric label.
const (
	StuckHung         = "hung"
	StuckPending      = "pending_too_long"
	StuckPastDeadline = "past_deadline"
	StuckMissing      = "missing"
	StuckPollFailing  = "poll_failing"
)

// StuckReasons lists every stuck reason.
var StuckReasons = []string{StuckHung, StuckPending, StuckPastDeadline, StuckMissing, StuckPollFailing}

// DeadlineGrace is how long a job may run past its walltime before tether
// reports that the scheduler and the expectation disagree (Slurm checks
// limits every ~30 s and may add OverTimeLimit and KillWait).
const DeadlineGrace = 5 * time.Minute

// Stuck tells whether a live run looks stuck, with a reason (one of
// StuckReasons, "" when fine) and a sentence for people.
func Stuck(now time.Time, st Status, site *schema.Site) (reason, detail string) {
	rec := st.Record
	if rec == nil || st.Outcome.Final {
		return "", ""
	}
	cur := rec.Current()
	state := backends.Unknown
	if st.Job != nil {
		state = st.Job.State
	}
	running := state == backends.Running || (st.Job == nil && st.Started != nil)
	switch {
	case st.PollErr != nil:
		return StuckPollFailing, "scheduler queries are failing: " + st.PollErr.Error()
	case st.Missing && st.Decision.Action == Wait:
		return StuckMissing, fmt.Sprintf("gone from the scheduler for %s with no exit file (lost after %s)", st.MissingFor.Round(time.Second), site.Poll.VanishGrace.D())
	case running && rec.Task.HeartbeatTimeout > 0:
		last := st.Summary.LastActivity
		if st.Started != nil && st.Started.Time.After(last) {
			last = st.Started.Time
		}
		if !last.IsZero() && now.Sub(last) > rec.Task.HeartbeatTimeout.D() {
			return StuckHung, fmt.Sprintf("no heartbeat or progress for %s (heartbeat_timeout %s)", now.Sub(last).Round(time.Second), rec.Task.HeartbeatTimeout.D())
		}
	}
	if state == backends.Pending && cur != nil {
		since := cur.SubmittedAt
		if st.Job != nil && !st.Job.Submit.IsZero() {
			since = st.Job.Submit
		}
		if limit := site.Poll.PendingAlertAfter.D(); limit > 0 && now.Sub(since) > limit {
			why := st.Job.Reason
			if why == "" {
				why = "the scheduler gave no reason"
			}
			return StuckPending, fmt.Sprintf("pending for %s: %s", now.Sub(since).Round(time.Second), why)
		}
	}
	if running && !st.Deadline.IsZero() && now.After(st.Deadline.Add(DeadlineGrace)) {
		return StuckPastDeadline, fmt.Sprintf("still running %s after its walltime deadline", now.Sub(st.Deadline).Round(time.Second))
	}
	return "", ""
}
