package slurmrest

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/tether-hpc/tether/backends/sbatch"
)

// The accounting records slurmrestd 22.05 (v0.0.38) and 24.11 (v0.0.40-42)
// gave for one finished job (testdata/capture-usage.sh) read as sacct
// reported the same job: elapsed, CPU-seconds, max RSS, nodes.
func TestParseDBUsageCaptured(t *testing.T) {
	for v, cluster := range map[string]string{"v0.0.38": "bookworm", "v0.0.40": "trixie", "v0.0.41": "trixie", "v0.0.42": "trixie"} {
		t.Run(v, func(t *testing.T) {
			raw, err := os.ReadFile("testdata/slurmdb-job-" + v + ".json")
			if err != nil {
				t.Fatal(err)
			}
			acct, err := os.ReadFile("testdata/sacct-usage-" + cluster + ".txt")
			if err != nil {
				t.Fatal(err)
			}
			id, _, _ := strings.Cut(string(acct), "|")
			want, ok := sbatch.ParseUsage(acct, id)
			if !ok {
				t.Fatalf("sacct capture unreadable")
			}
			got, ok, err := parseDBUsage(raw, id)
			if err != nil || !ok {
				t.Fatalf("%v %v", ok, err)
			}
			if got.Elapsed != want.Elapsed || got.CPUSeconds != want.CPUSeconds || got.GPUSeconds != want.GPUSeconds || got.Nodes != want.Nodes {
				t.Errorf("slurmdb %+v, sacct %+v", got, want)
			}
			// sacct prints MaxRSS in whole KiB
			if d := got.MaxRSSBytes - want.MaxRSSBytes; d < 0 || d >= 1024 || want.MaxRSSBytes < 150<<20 {
				t.Errorf("max RSS: slurmdb %d, sacct %d", got.MaxRSSBytes, want.MaxRSSBytes)
			}
			if _, ok, _ := parseDBUsage(raw, fmt.Sprint(id, 0)); ok {
				t.Error("another job's record read")
			}
		})
	}
}

// A step that ended OUT_OF_MEMORY is named, on every version's record
// (the captured records, with their batch step's state changed as Slurm
// records an OOM-killed step).
func TestParseStepOOM(t *testing.T) {
	for v, oom := range map[string]string{"v0.0.38": `"state": "OUT_OF_MEMORY"`, "v0.0.42": `"state": ["OUT_OF_MEMORY"]`} {
		raw, err := os.ReadFile("testdata/slurmdb-job-" + v + ".json")
		if err != nil {
			t.Fatal(err)
		}
		var id string
		if v == "v0.0.38" {
			id = "88"
		} else {
			id = "187"
		}
		if got, err := parseStepOOM(raw, id); err != nil || got != "" {
			t.Errorf("%s: completed steps named: %q %v", v, got, err)
		}
		completed := map[string]string{"v0.0.38": `"state": "COMPLETED"`, "v0.0.42": "\"state\": [\n                        \"COMPLETED\"\n                    ]"}[v]
		if !strings.Contains(string(raw), completed) {
			t.Fatalf("%s: capture has no %q", v, completed)
		}
		changed := strings.Replace(string(raw), completed, oom, -1)
		if got, err := parseStepOOM([]byte(changed), id); err != nil || got != "step "+id+".batch OUT_OF_MEMORY" {
			t.Errorf("%s: %q %v", v, got, err)
		}
	}
}
