package slurm_test

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/tether-hpc/tether/backends/internal/slurm"
	"github.com/tether-hpc/tether/launcher"
	"github.com/tether-hpc/tether/rundir"
)

func TestRefused(t *testing.T) {
	for num, want := range map[int]bool{
		2000: true, 2045: true, 2051: true, 2066: true, 2072: true, 2014: true, 9001: true,
		0: false, -1: false, 1007: false, 1800: false, 2007: false, 2016: false, 2017: false, 2021: false,
		2027: false, 2070: false, 2131: false, 5004: false, 5005: false, 6000: false, 7000: false,
	} {
		if got := slurm.Refused(num); got != want {
			t.Errorf("Refused(%d) = %v, want %v", num, got, want)
		}
	}
	if r, ok := slurm.RefusalIn("unable to submit: Invalid qos specification"); !ok || r != "Invalid qos specification" {
		t.Errorf("RefusalIn = %q %v", r, ok)
	}
	if _, ok := slurm.RefusalIn("Unable to contact slurm controller (connect failure)"); ok {
		t.Error("an outage is no refusal")
	}
	if _, ok := slurm.SbatchRefusal("sbatch: error: AssocGrpSubmitJobsLimit\nsbatch: error: Batch job submission failed: Job violates accounting/QOS policy (job submit limit, user's size and/or time limits)\n"); ok {
		t.Error("a submit-count limit is transient")
	}
}

// FindByTag relies on how tether names runs and attempts: launcher.Tag,
// rundir.NewRunID (the run's creation time) and the attempt directory.
func TestTagOfALauncherAttempt(t *testing.T) {
	created := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	store := &rundir.Store{Dir: "/var/tether/state"}
	run := store.Run(rundir.NewRunID("my-task", created))
	tag, ok := slurm.ParseTag(launcher.Tag(run.ID, 3))
	if !ok || tag.Run != run.ID || tag.Attempt != 3 {
		t.Fatalf("ParseTag(%q) = %+v %v", launcher.Tag(run.ID, 3), tag, ok)
	}
	if !tag.IsWorkDir(run.AttemptDir(3)) || !tag.IsWorkDir(run.AttemptDir(3)+"/") {
		t.Errorf("%s is not the working directory of %+v (suffix %s)", run.AttemptDir(3), tag, tag.DirSuffix())
	}
	for _, other := range []string{run.AttemptDir(1), run.AttemptDir(30), filepath.Join("/x", "attempts", "3"), store.Run("other-20261130T120000-abcdef").AttemptDir(3)} {
		if tag.IsWorkDir(other) {
			t.Errorf("%s taken for attempt 3 of %s", other, run.ID)
		}
	}
	if !tag.Since.Before(created) || created.Sub(tag.Since) > 3*time.Hour {
		t.Errorf("Since %v for a run created at %v", tag.Since, created)
	}
	if h := tag.LookBack(created.Add(24 * time.Hour)); h < 24 || h > 27 {
		t.Errorf("LookBack a day later = %d hours", h)
	}
	if h := tag.LookBack(created.Add(-time.Hour)); h != 1 {
		t.Errorf("LookBack with a clock behind = %d hours", h)
	}
	// a run id without a time: the longest look back
	if tag, ok := slurm.ParseTag("tether:hand-made:1"); !ok || !tag.Since.IsZero() || tag.LookBack(created) != 30*24 {
		t.Errorf("%+v %v", tag, ok)
	}
	for _, bad := range []string{"", "tether:", "tether:x", "tether:x:0", "tether:x:y", "other:x:1", "tether:../x:1"} {
		if _, ok := slurm.ParseTag(bad); ok {
			t.Errorf("ParseTag(%q) accepted", bad)
		}
	}
}
