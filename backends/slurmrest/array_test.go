package slurmrest

import (
	"encoding/json"
	"slices"
	"testing"

	"github.com/tether-hpc/tether/backends"
)

func TestArrayIndices(t *testing.T) {
	for expr, want := range map[string][]int{
		"2-5%2":        {2, 3, 4, 5},
		"0-9:3":        {0, 3, 6, 9},
		"1,4,7-8":      {1, 4, 7, 8},
		"7":            {7},
		"bad,3":        {3},
		"":             nil,
		"0-3,10-12%50": {0, 1, 2, 3, 10, 11, 12},
	} {
		if got := ArrayIndices(expr); !slices.Equal(got, want) {
			t.Errorf("ArrayIndices(%q) = %v, want %v", expr, got, want)
		}
	}
}

// The records GET /slurm/v0.0.42/jobs gave for array 12478 (`sbatch
// --array=0-5%2` on the 24.11 test cluster), reduced to the fields
// tether reads (and a plain job 12500 beside them): the pending
// array's one record holds indices 2-5; each started element has its own
// job id. tether knows them all as "12478_<index>".
func TestArrayRecordsBecomeElements(t *testing.T) {
	raw := `{"jobs":[
 {"job_id":12478,"array_job_id":{"set":true,"infinite":false,"number":12478},"array_task_id":{"set":false,"infinite":false,"number":0},"array_task_string":"2-5%2","job_state":["PENDING"],"state_reason":"JobArrayTaskLimit"},
 {"job_id":12480,"array_job_id":{"set":true,"infinite":false,"number":12478},"array_task_id":{"set":true,"infinite":false,"number":1},"array_task_string":"","job_state":["RUNNING"]},
 {"job_id":12479,"array_job_id":{"set":true,"infinite":false,"number":12478},"array_task_id":{"set":true,"infinite":false,"number":0},"array_task_string":"","job_state":["COMPLETED"],"exit_code":{"return_code":{"set":true,"number":0}}},
 {"job_id":12500,"array_job_id":{"set":true,"infinite":false,"number":0},"array_task_id":{"set":false,"infinite":false,"number":0},"job_state":["RUNNING"]}
]}`
	var r wireJobs
	if err := json.Unmarshal([]byte(raw), &r); err != nil {
		t.Fatal(err)
	}
	got := map[backends.JobID]backends.State{}
	for _, g := range r.Jobs {
		for _, st := range g.job().statuses() {
			got[st.ID] = st.State
		}
	}
	want := map[backends.JobID]backends.State{
		"12478_2": backends.Pending, "12478_3": backends.Pending, "12478_4": backends.Pending, "12478_5": backends.Pending,
		"12478_1": backends.Running, "12478_0": backends.Completed, "12500": backends.Running,
	}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for id, st := range want {
		if got[id] != st {
			t.Errorf("%s: %s, want %s", id, got[id], st)
		}
	}
	var best int64
	for _, g := range r.Jobs[:3] {
		best = max(best, g.job().base())
	}
	if best != 12478 {
		t.Errorf("a tag of the array finds %d, want the array's id 12478", best)
	}
}
