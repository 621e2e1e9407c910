package slurm

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tether-hpc/tether/backends"
)

func TestMapState(t *testing.T) {
	cases := map[string]backends.State{
		"PENDING": backends.Pending, "RUNNING": backends.Running, "COMPLETED": backends.Completed,
		"CANCELLED by 0": backends.Cancelled, "TIMEOUT": backends.Timeout, "NODE_FAIL": backends.NodeFail,
		"OUT_OF_MEMORY": backends.OutOfMemory, "PREEMPTED": backends.Preempted, "BOOT_FAIL": backends.BootFail,
		"DEADLINE": backends.Deadline, "SUSPENDED": backends.Suspended, "REQUEUED": backends.Requeued,
		"COMPLETING": backends.Completing, "CONFIGURING": backends.Configuring, "FAILED": backends.Failed,
		"SPECIAL_EXIT": backends.SpecialExit, "REVOKED": backends.Cancelled, "RESV_DEL_HOLD": backends.Pending,
		"REQUEUE_HOLD": backends.Requeued, "STOPPED": backends.Suspended, "SIGNALING": backends.Running,
		"STAGE_OUT": backends.Running, "RESIZING": backends.Running, "POWER_UP_NODE": backends.Configuring,
		"COMPLETED+COMPLETING": backends.Completing, "running": backends.Running, "WEIRD": backends.Unknown, "": backends.Unknown,
	}
	for in, want := range cases {
		if got := MapState(in); got != want {
			t.Errorf("MapState(%q) = %s, want %s", in, got, want)
		}
	}
	if MapState("FAILED", "COMPLETING") != backends.Completing {
		t.Error("REST flag COMPLETING not seen")
	}
	// REST v0.0.40+ state lists: the flags win as in squeue's output
	for _, c := range []struct {
		base  string
		flags []string
		want  backends.State
	}{
		{"COMPLETED", []string{"STAGE_OUT"}, backends.Running}, // burst buffer stage-out: not final
		{"PENDING", []string{"REQUEUED"}, backends.Requeued},
		{"PENDING", []string{"REQUEUE_HOLD"}, backends.Requeued},
		{"RUNNING", []string{"CONFIGURING"}, backends.Configuring},
		{"RUNNING", []string{"STOPPED"}, backends.Suspended},
		{"RUNNING", []string{"SIGNALING"}, backends.Running},
		{"FAILED", []string{"REQUEUED", "COMPLETING"}, backends.Completing},
		{"PENDING", []string{"RESV_DEL_HOLD"}, backends.Pending},
		{"RUNNING", []string{"UNKNOWN_FLAG"}, backends.Running},
	} {
		if got := MapState(c.base, c.flags...); got != c.want {
			t.Errorf("MapState(%s, %v) = %s, want %s", c.base, c.flags, got, c.want)
		}
	}
	for _, s := range KnownStates() {
		if MapState(s) == backends.Unknown {
			t.Errorf("%s unmapped", s)
		}
	}
}

func TestExpandHostlist(t *testing.T) {
	cases := map[string]string{
		"vm": "vm", "node[1-3]": "node1 node2 node3", "n[01-02,05]": "n01 n02 n05",
		"a,b[1-2],c": "a b1 b2 c", "rack[1-2]-n[1-2]": "rack1-n1 rack1-n2 rack2-n1 rack2-n2", "": "", "(null)": "",
		"bad[x-y]": "badx-y",
	}
	for in, want := range cases {
		if got := strings.Join(ExpandHostlist(in), " "); got != want {
			t.Errorf("ExpandHostlist(%q) = %q, want %q", in, got, want)
		}
	}
	// a damaged list too large to expand is kept as written (bounded
	// memory), the rest of the list still expands
	for in, want := range map[string][]string{
		"n[0-99999][0-99999]":          {"n[0-99999][0-99999]"},
		"a,n[0-99999999999999999]":     {"a", "n[0-99999999999999999]"},
		"x[1-2],n[0-99999,0-99999],y1": {"x1", "x2", "n[0-99999,0-99999]", "y1"},
	} {
		if got := ExpandHostlist(in); !slices.Equal(got, want) {
			t.Errorf("ExpandHostlist(%q) = %d names %.80q, want %q", in, len(got), got, want)
		}
	}
	if got := ExpandHostlist("n[0-99999]"); len(got) != 100000 || got[99999] != "n99999" {
		t.Errorf("a 100,000-node list: %d names", len(got))
	}
}

func TestTimes(t *testing.T) {
	if FormatLimit(90*time.Second) != "0-00:02:00" || FormatLimit(25*time.Hour) != "1-01:00:00" || FormatLimit(0) != "0-00:01:00" {
		t.Error("FormatLimit")
	}
	if !ParseTime("N/A").IsZero() || ParseTime("2026-11-26T21:01:14").IsZero() {
		t.Error("ParseTime")
	}
	if c, s := WaitStatus(768); c != 3 || s != 0 {
		t.Error("WaitStatus 768")
	}
	if c, s := WaitStatus(9); c != 0 || s != 9 {
		t.Error("WaitStatus 9")
	}
	if c, s, ok := ParseExitPair("0:15"); !ok || c != 0 || s != 15 {
		t.Error("ParseExitPair")
	}
}
