package slurmrest

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/tether-hpc/tether/backends"
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

// The answers slurmrestd 22.05 (v0.0.38) and 24.11 (v0.0.42) gave on the
// test clusters to a sixth job in a QOS with MaxSubmitJobsPerUser=5: Slurm
// error 2050 without the limit's name sbatch prints
// (QOSMaxSubmitJobPerUserLimit). It may be a submit limit (it clears) or a
// size/time limit (it never does): not sent, possibly a submit limit; the
// submitter waits a bounded time. With a limit's name, 2050 is decided by it.
func TestAccountingPolicyAnswers(t *testing.T) {
	tr := &transport{display: "slurmrestd"}
	for _, body := range []string{
		`{"errors":[{"error_code":2050,"error":"Job violates accounting/QOS policy (job submit limit, user's size and/or time limits)"}]}`,
		`{"errors":[{"description":"Batch job submission failed","error_number":2050,"error":"Job violates accounting/QOS policy (job submit limit, user's size and/or time limits)","source":"slurm_submit_batch_job()"}],"warnings":[]}`,
	} {
		err := tr.answerError("submit", http.StatusInternalServerError, []byte(body), true)
		if !errors.Is(err, backends.ErrMaybeSubmitLimit) || !errors.Is(err, backends.ErrNotSent) || errors.Is(err, backends.ErrRejected) {
			t.Errorf("%s: %v", body, err)
		}
	}
	named := `{"errors":[{"error_number":2050,"error":"Job violates accounting/QOS policy","description":"QOSMaxWallDurationPerJobLimit"}]}`
	if err := tr.answerError("submit", http.StatusInternalServerError, []byte(named), true); !errors.Is(err, backends.ErrRejected) {
		t.Errorf("a named size limit: %v", err)
	}
	sub := `{"errors":[{"error_number":2050,"error":"Job violates accounting/QOS policy","description":"AssocMaxSubmitJobLimit"}]}`
	if err := tr.answerError("submit", http.StatusInternalServerError, []byte(sub), true); !errors.Is(err, backends.ErrSubmitLimit) || errors.Is(err, backends.ErrMaybeSubmitLimit) {
		t.Errorf("a named submit limit: %v", err)
	}
}
