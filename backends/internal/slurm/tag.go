package slurm

import (
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/tether-hpc/tether/rundir"
)

// Tag is what a backend can learn from the tag tether gives every job,
// "tether:<run id>:<attempt>" (launcher.Tag), to find the job again in
// Slurm's accounting after the controller purged it (MinJobAge). The job
// comment is stored there only with AccountingStoreFlags=job_comment, but
// the working directory always is, and tether submits every attempt in its
// own directory, <state>/runs/<run id>/attempts/<attempt>.
type Tag struct {
	Run     string
	Attempt int
	// Since is shortly before the run was created (its id starts with the
	// time: rundir.NewRunID), so before any of its jobs was submitted; zero
	// when the run id carries no time.
	Since time.Time
}

// sinceMargin allows for clock skew between the submit host and slurmctld.
const sinceMargin = 2 * time.Hour

var runIDTime = regexp.MustCompile(`-(\d{8}T\d{6})-[0-9a-f]+$`)

// ParseTag reads a tether job tag.
func ParseTag(tag string) (Tag, bool) {
	rest, ok := strings.CutPrefix(tag, "tether:")
	if !ok {
		return Tag{}, false
	}
	i := strings.LastIndexByte(rest, ':')
	if i <= 0 {
		return Tag{}, false
	}
	n, err := strconv.Atoi(rest[i+1:])
	if err != nil || n < 1 || !rundir.ValidRunID(rest[:i]) {
		return Tag{}, false
	}
	t := Tag{Run: rest[:i], Attempt: n}
	if m := runIDTime.FindStringSubmatch(t.Run); m != nil {
		if at, err := time.ParseInLocation("20060102T150405", m[1], time.UTC); err == nil {
			t.Since = at.Add(-sinceMargin)
		}
	}
	return t, true
}

// DirSuffix is how the attempt's working directory ends, whatever the
// state directory: "/runs/<run id>/attempts/<attempt>".
func (t Tag) DirSuffix() string {
	return (&rundir.Store{Dir: "/"}).Run(t.Run).AttemptDir(t.Attempt)
}

// IsWorkDir reports whether a job's working directory is the attempt's.
func (t Tag) IsWorkDir(dir string) bool {
	return t.Run != "" && strings.HasSuffix(strings.TrimRight(dir, "/"), t.DirSuffix())
}

// maxLookBack bounds an accounting search when the run id carries no time.
const maxLookBack = 30 * 24 * time.Hour

// LookBack is how far back an accounting search for the tag's jobs must
// reach from now, in whole hours ("now-<N>hours" is understood by sacct
// and by slurmrestd's slurmdbd plugin alike: Slurm's parse_time()).
func (t Tag) LookBack(now time.Time) int {
	d := maxLookBack
	if !t.Since.IsZero() && now.Sub(t.Since) < d {
		d = now.Sub(t.Since)
	}
	h := int((d + time.Hour - 1) / time.Hour)
	if h < 1 {
		h = 1
	}
	return h
}
