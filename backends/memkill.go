package backends

import (
	"bytes"
	"regexp"
)

// memoryKills are the lines batch systems write into a job's stderr when
// they kill it for its memory use:
//   - Slurm's slurmstepd with JobAcctGatherParams=OverMemoryKill (no
//     cgroup, so no OUT_OF_MEMORY state: the step is CANCELLED, the job
//     FAILED): "error: StepId=185.0 exceeded memory limit (633925632 >
//     104857600), being killed" and "error: Exceeded job memory limit";
//   - Slurm's task/cgroup OOM notice: "error: Detected 1 oom_kill event in
//     StepId=12.batch. Some of the step tasks have been OOM Killed.";
//   - the OpenPBS MoM with $enforce mem: "=>> PBS: job killed: mem
//     153600kb exceeded limit 102400kb" (the job's Exit_status -27, gone
//     with the job when the server keeps no history).
var memoryKills = regexp.MustCompile(`StepId=\S+ exceeded memory limit \(\d+ > \d+\)|Exceeded (job|step) memory limit|Detected \d+ oom[_-]kill events? in StepId=[^\s.]+(\.[^\s.]+)?|PBS: job killed: (mem|vmem) \d+kb exceeded limit \d+kb`)

// MemoryKill finds a batch system's out-of-memory kill notice in the tail
// of a job's stderr and returns it ("" when there is none).
func MemoryKill(stderrTail []byte) string {
	// the last notice: an earlier attempt's lines are in their own file
	all := memoryKills.FindAll(stderrTail, -1)
	if len(all) == 0 {
		return ""
	}
	for i := len(all) - 1; i >= 0; i-- {
		if !bytes.HasPrefix(all[i], []byte("Exceeded")) {
			return string(all[i])
		}
	}
	return string(all[len(all)-1])
}
