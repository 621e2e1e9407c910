package sbatch

import (
	"testing"
	"time"
)

func TestParseUsage(t *testing.T) {
	// sacct -n -P -j 41 --format=JobIDRaw,State,ElapsedRaw,CPUTimeRAW,AllocTRES,MaxRSS,NNodes
	raw := []byte(`41|COMPLETED|12|48|billing=4,cpu=4,gres/gpu=2,mem=1000M,node=2||2
41.batch|COMPLETED|12|24|cpu=2,mem=500M,node=1|2540K|1
41.extern|COMPLETED|12|48|billing=4,cpu=4,node=2|0|2
41.0|COMPLETED|10|40|cpu=4,mem=1000M,node=2|250.50M|2
`)
	u, ok := ParseUsage(raw, "41")
	if !ok || u.Elapsed != 12*time.Second || u.CPUSeconds != 48 || u.GPUSeconds != 24 || u.Nodes != 2 || u.MaxRSSBytes != int64(250.5*(1<<20)) || u.Source != "sacct" {
		t.Errorf("%+v %v", u, ok)
	}
	if _, ok := ParseUsage([]byte("42|RUNNING|3|3|cpu=1,node=1||1\n42.batch|RUNNING|3|3|cpu=1||1\n"), "42"); ok {
		t.Error("a running job's usage is not final")
	}
	if _, ok := ParseUsage(raw, "7"); ok {
		t.Error("another job's lines were read")
	}
	for s, want := range map[string]int64{"": 0, "0": 0, "1234K": 1234 << 10, "3G": 3 << 30, "12.5M": int64(12.5 * (1 << 20)), "x": 0} {
		if got := slurmSize(s); got != want {
			t.Errorf("slurmSize(%q) = %d, want %d", s, got, want)
		}
	}
}

// An srun step OOM-killed while the batch script survives: sacct shows the
// step OUT_OF_MEMORY with exit 0:125 while the job is FAILED (Slurm's
// documented record of a step over its memory, sacct -o JobIDRaw,State,ExitCode).
func TestParseStepOOM(t *testing.T) {
	raw := []byte("77|FAILED|137:0\n77.batch|FAILED|137:0\n77.extern|COMPLETED|0:0\n77.0|OUT_OF_MEMORY|0:125\n")
	if got := ParseStepOOM(raw, "77"); got != "step 77.0 OUT_OF_MEMORY (exit 0:125)" {
		t.Errorf("%q", got)
	}
	if got := ParseStepOOM([]byte("78|FAILED|1:0\n78.batch|FAILED|1:0\n78.0|FAILED|1:0\n"), "78"); got != "" {
		t.Errorf("no OOM step: %q", got)
	}
	// the job line itself is the scheduler's state, not a step's
	if got := ParseStepOOM([]byte("79|OUT_OF_MEMORY|0:125\n"), "79"); got != "" {
		t.Errorf("job line read as a step: %q", got)
	}
}
