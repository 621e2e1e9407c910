package pbs

import (
	"os"
	"testing"
	"time"
)

// A real OpenPBS 23.06 record of a finished job: walltime 4 s on one
// CPU of pbshost, mem 0kb (too short for the MoM to sample).
func TestParseUsageCaptured(t *testing.T) {
	raw, err := os.ReadFile("testdata/openpbs-23.06_03_tiny_finished-2.json")
	if err != nil {
		t.Fatal(err)
	}
	u, ok, err := ParseUsage(raw, "3.pbshost")
	if err != nil || !ok {
		t.Fatalf("%v %v", ok, err)
	}
	if u.Elapsed != 4*time.Second || u.CPUSeconds != 4 || u.GPUSeconds != 0 || u.Nodes != 1 || u.MaxRSSBytes != 0 || u.Source != "qstat" {
		t.Errorf("%+v", u)
	}
	if _, ok, _ := ParseUsage(raw, "4.pbshost"); ok {
		t.Error("another job read")
	}
}

func TestParseUsageRunningIsNotFinal(t *testing.T) {
	raw := []byte(`{"Jobs":{"5.h":{"job_state":"R","exec_host":"h/0","resources_used":{"walltime":"00:00:03","mem":"100kb","ncpus":1}}}}`)
	if _, ok, err := ParseUsage(raw, "5.h"); ok || err != nil {
		t.Errorf("running job: %v %v", ok, err)
	}
	raw = []byte(`{"Jobs":{"6.h":{"job_state":"F","exec_host":"a/0*2+b/0*2","resources_used":{"walltime":"00:01:00","mem":"2048kb","ncpus":4},"Resource_List":{"ngpus":2}}}}`)
	u, ok, err := ParseUsage(raw, "6.h")
	if !ok || err != nil || u.CPUSeconds != 240 || u.GPUSeconds != 120 || u.Nodes != 2 || u.MaxRSSBytes != 2<<20 {
		t.Errorf("%+v %v %v", u, ok, err)
	}
}

func TestPBSSize(t *testing.T) {
	for s, want := range map[string]int64{"12345kb": 12345 << 10, "3mb": 3 << 20, "1gb": 1 << 30, "512b": 512, "2w": 16, "0kb": 0, "": 0, "x": 0, "7": 7} {
		if got := pbsSize(s); got != want {
			t.Errorf("pbsSize(%q) = %d, want %d", s, got, want)
		}
	}
}
