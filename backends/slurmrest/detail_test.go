package slurmrest

import (
	"slices"
	"testing"
	"time"

	"github.com/tether-hpc/tether/backends"
)

// Each poll reads at most one pending job's record: jobs never read
// first (oldest job first), then the one read longest ago once its
// detail is older than detailMaxAge; the detail fills every poll after.
func TestLiveDetailIsBoundedAndRoundRobin(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	d := newLiveDetail()
	d.now = func() time.Time { return now }
	poll := func() map[backends.JobID]backends.JobStatus {
		out := map[backends.JobID]backends.JobStatus{"12": {ID: "12", State: backends.Running}}
		for _, id := range []backends.JobID{"30", "10", "20"} {
			out[id] = backends.JobStatus{ID: id, State: backends.Pending}
		}
		return out
	}
	var order []backends.JobID
	for i := 0; i < 3; i++ {
		out := poll()
		ids := d.pick(out)
		if len(ids) != detailPerPoll {
			t.Fatalf("poll %d picked %v", i, ids)
		}
		order = append(order, ids...)
		d.store(ids[0], backends.JobStatus{State: backends.Pending, Reason: "Priority" + string(ids[0]), ExpectedStart: now.Add(time.Hour)})
		d.apply(out)
		if out[ids[0]].Reason != "Priority"+string(ids[0]) || !out[ids[0]].ExpectedStart.Equal(now.Add(time.Hour)) {
			t.Errorf("poll %d: %+v", i, out[ids[0]])
		}
		now = now.Add(10 * time.Second)
	}
	if !slices.Equal(order, []backends.JobID{"10", "20", "30"}) {
		t.Errorf("read order %v, want oldest job first", order)
	}
	// all read and fresh: nothing to read, but the detail stays
	out := poll()
	if ids := d.pick(out); len(ids) != 0 {
		t.Errorf("fresh detail read again: %v", ids)
	}
	d.apply(out)
	if out["20"].Reason != "Priority20" || out["12"].Reason != "" {
		t.Errorf("%+v", out)
	}
	// stale: the one read longest ago first
	now = now.Add(detailMaxAge)
	if ids := d.pick(poll()); !slices.Equal(ids, []backends.JobID{"10"}) {
		t.Errorf("stale pick %v, want 10", ids)
	}
	// a job that started forgets its detail
	out = poll()
	out["10"] = backends.JobStatus{ID: "10", State: backends.Running}
	d.apply(out)
	if _, kept := d.jobs["10"]; kept || out["10"].Reason != "" {
		t.Errorf("a running job kept its pending detail: %+v", out["10"])
	}
}

func TestBeginTime(t *testing.T) {
	now := time.Date(2026, 12, 4, 10, 0, 0, 0, time.Local)
	for s, want := range map[string]time.Time{
		"now+3600":         now.Add(time.Hour),
		"now+1hour":        now.Add(time.Hour),
		"now+90minutes":    now.Add(90 * time.Minute),
		"now+2days":        now.Add(48 * time.Hour),
		"2026-12-05T08:30": time.Date(2026, 12, 5, 8, 30, 0, 0, time.Local),
		"2026-12-05":       time.Date(2026, 12, 5, 0, 0, 0, 0, time.Local),
	} {
		got, err := beginTime(s, now)
		if err != nil || !got.Equal(want) {
			t.Errorf("%s: %v %v, want %v", s, got, err, want)
		}
	}
	for _, bad := range []string{"now+", "now+1fortnight", "tomorrow", "noon"} {
		if _, err := beginTime(bad, now); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
