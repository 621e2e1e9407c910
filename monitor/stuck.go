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

// Phase is the run's state as the monitor reports it (one of RunStates):
// the scheduler's state, except that a started wrapper means running
// whatever a lagging scheduler answer says.
func Phase(st Status) string {
	phase := "unknown"
	if st.Job != nil {
		switch st.Job.State {
		case backends.Pending, backends.Requeued, backends.Configuring:
			phase = "pending"
		case backends.Running:
			phase = "running"
		case backends.Completing:
			phase = "completing"
		case backends.Suspended:
			phase = "suspended"
		}
	}
	if st.Started != nil && (phase == "unknown" || phase == "pending") {
		phase = "running"
	}
	return phase
}

// StartOf is when the job started: the scheduler's start time, else the
// wrapper's started file; zero when neither is known.
func StartOf(st Status) time.Time {
	if st.Job != nil && !st.Job.Start.IsZero() {
		return st.Job.Start
	}
	if st.Started != nil {
		return st.Started.Time
	}
	return time.Time{}
}

// DeadlineOf is the scheduler's end-time for the job, else start plus the
// Task's walltime (the local backend and PBS give none).
func DeadlineOf(st Status) time.Time {
	if !st.Deadline.IsZero() {
		return st.Deadline
	}
	if st.Job != nil && !st.Job.Deadline.IsZero() {
		return st.Job.Deadline
	}
	if start := StartOf(st); !start.IsZero() && st.Record != nil && st.Record.Task.Resources.Walltime > 0 {
		return start.Add(st.Record.Task.Resources.Walltime.D())
	}
	return time.Time{}
}

// LastSignOfLife is the Task's last heartbeat, progress or other status
// line, or the wrapper's start, or the job's start when the Task has
// written nothing yet (a wrapper stuck before the Task, say on a hung
// filesystem, is hung too).
func LastSignOfLife(st Status) time.Time {
	last := st.Summary.LastActivity
	if st.Started != nil && st.Started.Time.After(last) {
		last = st.Started.Time
	}
	if last.IsZero() {
		last = StartOf(st)
	}
	return last
}

// Stuck tells whether a live run looks stuck, with a reason (one of
// StuckReasons, "" when fine) and a sentence for people.
func Stuck(now time.Time, st Status, site *schema.Site) (reason, detail string) {
	rec := st.Record
	if rec == nil || st.Outcome.Final {
		return "", ""
	}
	cur := rec.Current()
	phase := Phase(st)
	switch {
	case st.PollErr != nil:
		return StuckPollFailing, "scheduler queries are failing: " + st.PollErr.Error()
	case st.Missing && st.Decision.Action == Wait:
		return StuckMissing, fmt.Sprintf("gone from the scheduler for %s with no exit file (lost after %s)", st.MissingFor.Round(time.Second), site.Poll.VanishGrace.D())
	case phase == "running" && rec.Task.HeartbeatTimeout > 0:
		if last := LastSignOfLife(st); !last.IsZero() && now.Sub(last) > rec.Task.HeartbeatTimeout.D() {
			return StuckHung, fmt.Sprintf("no heartbeat or progress for %s (heartbeat_timeout %s)", now.Sub(last).Round(time.Second), rec.Task.HeartbeatTimeout.D())
		}
	}
	if phase == "pending" && cur != nil {
		since := cur.SubmittedAt
		if st.Job != nil && !st.Job.Submit.IsZero() {
			since = st.Job.Submit
		}
		if limit := site.Poll.PendingAlertAfter.D(); limit > 0 && !since.IsZero() && now.Sub(since) > limit {
			why := ""
			if st.Job != nil {
				why = st.Job.Reason
			}
			if why == "" {
				why = "the scheduler gave no reason"
			}
			return StuckPending, fmt.Sprintf("pending for %s: %s", now.Sub(since).Round(time.Second), why)
		}
	}
	if deadline := DeadlineOf(st); phase == "running" && !deadline.IsZero() && now.After(deadline.Add(DeadlineGrace)) {
		return StuckPastDeadline, fmt.Sprintf("still running %s after its walltime deadline", now.Sub(deadline).Round(time.Second))
	}
	return "", ""
}
