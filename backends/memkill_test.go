package backends

import "testing"

func TestMemoryKill(t *testing.T) {
	for in, want := range map[string]string{
		// the test cluster's slurmstepd 22.05 with OverMemoryKill, as it wrote the job's stderr
		"slurmstepd-vm: error: StepId=185.0 exceeded memory limit (633925632 > 104857600), being killed\nslurmstepd-vm: error: Exceeded job memory limit\nsrun: error: vm: task 0: Killed\n": "StepId=185.0 exceeded memory limit (633925632 > 104857600)",
		"slurmstepd: error: Detected 1 oom_kill event in StepId=12.batch. Some of the step tasks have been OOM Killed.\n":                                                                    "Detected 1 oom_kill event in StepId=12.batch",
		"=>> PBS: job killed: mem 153600kb exceeded limit 102400kb\n":                                                                                                                        "PBS: job killed: mem 153600kb exceeded limit 102400kb",
		"slurmstepd: error: Exceeded job memory limit\n":                                                                                                                                     "Exceeded job memory limit",
		"Traceback (most recent call last):\nMemoryError\n":                                                                                                                                  "",
		"=>> PBS: job killed: walltime 61 exceeded limit 60\n":                                                                                                                               "",
	} {
		if got := MemoryKill([]byte(in)); got != want {
			t.Errorf("%q: %q, want %q", in, got, want)
		}
	}
}
