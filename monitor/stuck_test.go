package monitor

import (
	"errors"
	"testing"
	"time"

	"github.com/tether-hpc/tether/backends"
	"github.com/tether-hpc/tether/rundir"
	"github.com/tether-hpc/tether/schema"
)

func TestStuckTable(t *testing.T) {
	site, err := schema.ParseSite("s.toml", []byte("name='s'\nbackend='sbatch'\n[poll]\npending_alert_after='30m'\nvanish_grace='2m'\n"))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(2e9, 0)
	ago := func(d time.Duration) time.Time { return now.Add(-d) }
	rec := func(hb time.Duration) *schema.RunRecord {
		task := schema.DefaultTask()
		task.HeartbeatTimeout = schema.Duration(hb)
		task.Resources.Walltime = schema.Duration(time.Hour)
		return &schema.RunRecord{RunID: "r", Task: task, Attempts: []schema.Attempt{{N: 1, JobID: "1", SubmittedAt: ago(3 * time.Hour)}}}
	}
	job := func(state backends.State, start time.Time) *backends.JobStatus {
		return &backends.JobStatus{ID: "1", State: state, Start: start, Submit: ago(3 * time.Hour), Reason: "Priority"}
	}
	started := &schema.Started{Time: ago(20 * time.Minute), Attempt: 1}
	cases := []struct {
		name string
		st   Status
		want string
	}{
		{"running and heart-beating", Status{Record: rec(time.Minute), Job: job(backends.Running, ago(20*time.Minute)), Started: started,
			Summary: rundir.Summary{LastActivity: ago(10 * time.Second)}}, ""},
		{"running, silent since the wrapper started", Status{Record: rec(time.Minute), Job: job(backends.Running, ago(20*time.Minute)), Started: started}, StuckHung},
		{"running, no started file and no status line: hung since the job started", Status{Record: rec(time.Minute), Job: job(backends.Running, ago(3*time.Hour))}, StuckHung},
		{"running, no heartbeat_timeout", Status{Record: rec(0), Job: job(backends.Running, ago(20*time.Minute)), Started: started}, ""},
		{"just started, nothing written yet", Status{Record: rec(time.Minute), Job: job(backends.Running, ago(10*time.Second))}, ""},
		{"pending too long", Status{Record: rec(0), Job: job(backends.Pending, time.Time{})}, StuckPending},
		{"configuring too long counts as pending", Status{Record: rec(0), Job: job(backends.Configuring, time.Time{})}, StuckPending},
		{"pending briefly", Status{Record: rec(0), Job: &backends.JobStatus{ID: "1", State: backends.Pending, Submit: ago(time.Minute)}}, ""},
		{"past the scheduler's deadline", Status{Record: rec(0), Job: job(backends.Running, ago(2*time.Hour)), Deadline: ago(10 * time.Minute)}, StuckPastDeadline},
		{"past start+walltime when the scheduler gives no deadline", Status{Record: rec(0), Job: job(backends.Running, ago(70*time.Minute))}, StuckPastDeadline},
		{"within the deadline grace", Status{Record: rec(0), Job: job(backends.Running, ago(62*time.Minute))}, ""},
		{"gone without exit file, within the grace", Status{Record: rec(0), Started: started, Missing: true, MissingFor: time.Minute}, StuckMissing},
		{"polls failing", Status{Record: rec(time.Minute), Job: job(backends.Running, ago(time.Minute)), PollErr: errors.New("slurmctld down")}, StuckPollFailing},
		{"decided", Status{Record: rec(time.Minute), Outcome: schema.Outcome{Final: true}, Job: job(backends.Running, ago(3*time.Hour))}, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, detail := Stuck(now, c.st, site)
			if got != c.want {
				t.Errorf("Stuck = %q (%s), want %q", got, detail, c.want)
			}
			if got != "" && detail == "" {
				t.Error("a stuck reason without a sentence")
			}
		})
	}
}

// The metrics view and stuck detection agree on state and deadline.
func TestViewAgreesWithStuck(t *testing.T) {
	site, _ := schema.ParseSite("s.toml", []byte("name='s'\nbackend='local'\n"))
	now := time.Unix(2e9, 0)
	task := schema.DefaultTask()
	task.Resources.Walltime = schema.Duration(time.Hour)
	st := Status{Record: &schema.RunRecord{RunID: "r", Task: task, Attempts: []schema.Attempt{{N: 1, JobID: "1"}}},
		Started: &schema.Started{Time: now.Add(-70 * time.Minute), Attempt: 1}}
	v := viewOf("s", now, st, site)
	if v.State != "running" || v.Stuck != StuckPastDeadline {
		t.Errorf("view %+v", v)
	}
	if want := ts(now.Add(-10 * time.Minute)); v.Deadline != want {
		t.Errorf("deadline %v, want %v", v.Deadline, want)
	}
	if v.Submit != 0 || v.LastProgress != ts(now.Add(-70*time.Minute)) {
		t.Errorf("submit %v last progress %v", v.Submit, v.LastProgress)
	}
}

// The monitor looks more often when a running run nears its walltime.
func TestNearDeadline(t *testing.T) {
	now := time.Unix(2e9, 0)
	m := &Monitor{Metrics: NewMetrics("test"), Now: func() time.Time { return now }}
	set := func(state string, deadline time.Time) {
		m.Metrics.SetRuns("s", map[string]RunView{"r": {Site: "s", RunID: "r", State: state, Deadline: ts(deadline)}})
	}
	for _, c := range []struct {
		state    string
		deadline time.Time
		want     bool
	}{
		{"running", now.Add(5 * time.Second), true},
		{"running", now.Add(-time.Minute), true}, // just past: the end is due
		{"running", now.Add(time.Hour), false},
		{"running", now.Add(-time.Hour), false}, // long past: stuck, not imminent
		{"pending", now.Add(5 * time.Second), false},
		{"running", time.Time{}, false},
	} {
		set(c.state, c.deadline)
		if got := m.nearDeadline("s", 20*time.Second); got != c.want {
			t.Errorf("%s, deadline in %v: near = %v, want %v", c.state, c.deadline.Sub(now), got, c.want)
		}
	}
}
