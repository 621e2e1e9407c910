package launcher

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/tether-hpc/tether/backends"
)

// The test clusters' partitions: debug (default, 1 day) and short (2 min),
// one node of 32 CPUs; plus a two-node gpu partition that is down.
var testParts = []backends.Partition{
	{Name: "debug", Default: true, Up: true, MaxTime: 24 * time.Hour, TotalNodes: 1, TotalCPUs: 32},
	{Name: "short", Up: true, MaxTime: 2 * time.Minute, TotalNodes: 1, TotalCPUs: 32},
	{Name: "big", Up: true, MaxTime: time.Hour, MaxNodes: 2, TotalNodes: 4, TotalCPUs: 128, MaxCPUsPerNode: 32, MaxMemPerNodeMiB: 4000},
	{Name: "old", Inactive: true, MaxTime: 48 * time.Hour, TotalNodes: 1, TotalCPUs: 32},
}

func TestFit(t *testing.T) {
	req := func(part string, wall time.Duration, mod ...func(*backends.JobRequest)) backends.JobRequest {
		r := backends.JobRequest{Partition: part, Walltime: wall, Nodes: 1, NTasks: 1, CPUsPerTask: 1}
		for _, m := range mod {
			m(&r)
		}
		return r
	}
	nodes := func(n int) func(*backends.JobRequest) { return func(r *backends.JobRequest) { r.Nodes = n } }
	for _, c := range []struct {
		name       string
		req        backends.JobRequest
		candidates []string
		partition  string // on success
		refused    string // substring of the refusal
	}{
		{"fits its partition", req("short", time.Minute), nil, "short", ""},
		{"walltime over MaxTime", req("short", 2*time.Hour), nil, "", `walltime 2h exceeds partition "short" MaxTime 2m`},
		{"unknown partition", req("nosuch", time.Minute), nil, "", `partition "nosuch" does not exist (the scheduler has "debug", "short", "big", "old")`},
		{"more nodes than MaxNodes", req("big", time.Minute, nodes(3)), nil, "", `3 nodes exceed partition "big" MaxNodes 2`},
		{"more nodes than the partition has", req("debug", time.Minute, nodes(2)), nil, "", `2 nodes exceed the 1 of partition "debug"`},
		{"more CPUs than the partition has", req("debug", time.Minute, func(r *backends.JobRequest) { r.NTasks = 8; r.CPUsPerTask = 8 }), nil, "", `64 CPUs exceed the 32 of partition "debug"`},
		{"CPUs per node", req("big", time.Minute, nodes(2), func(r *backends.JobRequest) { r.NTasksPerNode = 4; r.CPUsPerTask = 16 }), nil, "", `64 CPUs per node exceed partition "big" MaxCPUsPerNode 32`},
		{"memory per node", req("big", time.Minute, func(r *backends.JobRequest) { r.MemoryMiB = 8000 }), nil, "", `memory 8000M per node exceeds partition "big" MaxMemPerNode 4000M`},
		{"inactive partition", req("old", time.Hour), nil, "", `partition "old" is inactive`},
		{"a list fits by one", req("short,debug", time.Hour), nil, "short,debug", ""},
		{"default partition too short", req("", 48*time.Hour), nil, "", `walltime 48h exceeds partition "debug" MaxTime 24h (the default partition`},
		{"default partition fits", req("", time.Hour), nil, "", ""},
		{"auto picks the first that fits", req("auto", time.Hour), []string{"short", "big", "debug"}, "big", ""},
		{"auto: none fits", req("auto", 30*time.Hour), []string{"short", "debug"}, "", `no partition fits: walltime 30h exceeds partition "short" MaxTime 2m; walltime 30h exceeds partition "debug" MaxTime 24h`},
		{"auto without a list: default first", req("auto", time.Hour), nil, "debug", ""},
		{"auto skips inactive", req("auto", 30*time.Hour), []string{"old", "debug"}, "", `partition "old" is inactive`},
	} {
		t.Run(c.name, func(t *testing.T) {
			pl, err := Fit(c.req, testParts, c.candidates)
			if c.refused != "" {
				if !errors.Is(err, backends.ErrRejected) || !strings.Contains(err.Error(), c.refused) {
					t.Fatalf("Fit: %v, want a refusal with %q", err, c.refused)
				}
				return
			}
			if err != nil {
				t.Fatalf("Fit: %v", err)
			}
			if pl.Partition != c.partition || pl.Why == "" {
				t.Errorf("placed in %q (%s), want %q", pl.Partition, pl.Why, c.partition)
			}
		})
	}
}

// Without a default marked (slurmrestd v0.0.40+ does not say which it
// is), a request is refused only when it fits no partition.
func TestFitUnknownDefault(t *testing.T) {
	parts := []backends.Partition{{Name: "a", MaxTime: time.Hour}, {Name: "b", MaxTime: 4 * time.Hour}}
	if _, err := Fit(backends.JobRequest{Walltime: 2 * time.Hour}, parts, nil); err != nil {
		t.Errorf("2h with b allowing 4h: %v", err)
	}
	if _, err := Fit(backends.JobRequest{Walltime: 5 * time.Hour}, parts, nil); !errors.Is(err, backends.ErrRejected) {
		t.Errorf("5h fits nowhere, got %v", err)
	}
}
