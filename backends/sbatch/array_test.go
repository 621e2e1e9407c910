package sbatch

import (
	"strings"
	"testing"

	"github.com/tether-hpc/tether/backends"
)

// squeue -h -r -O squeueFormat lines for array 1426 (`--array=0-5%2` on
// the 22.05 test cluster; the ids, states and array fields as squeue
// printed them, the times made up): started elements have job ids of their own (1427,
// 1428), pending ones the array's; tether knows each as "1426_<index>".
// A plain job's ArrayTaskID is N/A.
func TestParseSqueueArrayElements(t *testing.T) {
	raw := strings.Join([]string{
		"1426|PENDING|JobArrayTaskLimit|0|(null)|2026-12-04T21:05:31|2026-12-04T21:06:31|N/A|1:00|1426|4|tether:arr-1:1",
		"1427|RUNNING|None|0|vm|2026-12-04T21:05:31|2026-12-04T21:05:32|2026-12-04T21:06:32|1:00|1426|0|tether:arr-1:1",
		"1428|RUNNING|None|0|vm|2026-12-04T21:05:31|2026-12-04T21:05:32|2026-12-04T21:06:32|1:00|1426|1|tether:arr-1:1",
		"1500|RUNNING|None|0|vm|2026-12-04T21:05:31|2026-12-04T21:05:32|2026-12-04T21:06:32|1:00|1500|N/A|tether:single:1",
	}, "\n")
	got := map[backends.JobID]backends.State{}
	for _, st := range ParseSqueue([]byte(raw)) {
		got[st.ID] = st.State
	}
	want := map[backends.JobID]backends.State{"1426_4": backends.Pending, "1426_0": backends.Running, "1426_1": backends.Running, "1500": backends.Running}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for id, st := range want {
		if got[id] != st {
			t.Errorf("%s: %s, want %s", id, got[id], st)
		}
	}
	for id, ok := range map[string]bool{"1426_4": true, "1426": true, "1426_": false, "_4": false, "1426_[2-5]": false, "x": false} {
		if ValidID(id) != ok {
			t.Errorf("ValidID(%q) = %v", id, !ok)
		}
	}
	if jobNum("1426_[2-5%2]") != 1426 || jobNum("1426_7") != 1426 || jobNum("1426+0") != 0 {
		t.Errorf("jobNum: %d %d %d", jobNum("1426_[2-5%2]"), jobNum("1426_7"), jobNum("1426+0"))
	}
}
