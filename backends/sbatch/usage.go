package sbatch

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/tether-hpc/tether/backends"
	"github.com/tether-hpc/tether/backends/internal/slurm"
)

// usageFormat is the sacct field list Usage reads, for the job and each
// of its steps.
const usageFormat = "JobID,State,ElapsedRaw,CPUTimeRAW,AllocTRES,MaxRSS,NNodes"

// Usage reads a finished job's use from accounting with one sacct call
// (the job line and its steps): ElapsedRaw, CPUTimeRAW (allocated CPUs ×
// elapsed), the GPUs of AllocTRES × elapsed, the largest MaxRSS of its
// steps and NNodes. Without accounting, or while the job has not ended
// in accounting, ok is false.
func (b *Backend) Usage(ctx context.Context, id backends.JobID) (backends.Usage, bool, error) {
	if !b.Accounting {
		return backends.Usage{}, false, nil
	}
	raw, err := b.Output(ctx, failures, nil, "sacct", "-n", "-P", "-j", string(id), "--format="+usageFormat)
	if err != nil {
		return backends.Usage{}, false, err
	}
	u, ok := ParseUsage(raw, string(id))
	return u, ok, nil
}

// ParseUsage reads sacct -P output in usageFormat for job id; ok is false
// when the job has no line or has not ended.
func ParseUsage(raw []byte, id string) (backends.Usage, bool) {
	u := backends.Usage{Source: "sacct"}
	found := false
	for _, line := range strings.Split(string(raw), "\n") {
		f := strings.Split(strings.TrimSpace(line), "|")
		if len(f) < 7 {
			continue
		}
		jid, step, _ := strings.Cut(f[0], ".")
		if jid != id {
			continue
		}
		if rss := slurmSize(f[5]); rss > u.MaxRSSBytes {
			u.MaxRSSBytes = rss
		}
		if step != "" {
			continue
		}
		if st := slurm.MapState(f[1]); !st.Terminal() {
			return backends.Usage{}, false
		}
		found = true
		el, _ := strconv.ParseInt(f[2], 10, 64)
		u.Elapsed = time.Duration(el) * time.Second
		cpu, _ := strconv.ParseFloat(f[3], 64)
		u.CPUSeconds = cpu
		u.GPUSeconds = float64(tresCount(f[4], "gres/gpu")) * float64(el)
		u.Nodes, _ = strconv.Atoi(f[6])
	}
	return u, found
}

// tresCount is the count of one TRES in a "cpu=2,mem=1G,node=1,gres/gpu=2"
// list (0 when absent).
func tresCount(tres, name string) int {
	for _, kv := range strings.Split(tres, ",") {
		k, v, ok := strings.Cut(kv, "=")
		if ok && k == name {
			n, _ := strconv.Atoi(v)
			return n
		}
	}
	return 0
}

// slurmSize parses sacct's sizes ("1234K", "12.50M", "3G", "0") into bytes.
func slurmSize(s string) int64 {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0
	}
	mult := 1.0
	switch s[len(s)-1] {
	case 'K', 'k':
		mult = 1 << 10
	case 'M', 'm':
		mult = 1 << 20
	case 'G', 'g':
		mult = 1 << 30
	case 'T', 't':
		mult = 1 << 40
	}
	if mult != 1 {
		s = s[:len(s)-1]
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return 0
	}
	return int64(v * mult)
}

// StepOOM asks accounting (one sacct call with the job's steps) whether a
// step of the job ended OUT_OF_MEMORY.
func (b *Backend) StepOOM(ctx context.Context, id backends.JobID) (string, error) {
	if !b.Accounting {
		return "", nil
	}
	raw, err := b.Output(ctx, failures, nil, "sacct", "-n", "-P", "-j", string(id), "--format=JobID,State,ExitCode")
	if err != nil {
		return "", err
	}
	return ParseStepOOM(raw, string(id)), nil
}

// ParseStepOOM names the steps of job id that sacct -P
// (JobID,State,ExitCode) shows OUT_OF_MEMORY, with their exit codes.
func ParseStepOOM(raw []byte, id string) string {
	var steps []string
	for _, line := range strings.Split(string(raw), "\n") {
		f := strings.Split(strings.TrimSpace(line), "|")
		if len(f) < 3 {
			continue
		}
		jid, step, _ := strings.Cut(f[0], ".")
		if jid == id && step != "" && slurm.MapState(f[1]) == backends.OutOfMemory {
			steps = append(steps, fmt.Sprintf("step %s OUT_OF_MEMORY (exit %s)", f[0], f[2]))
		}
	}
	return strings.Join(steps, ", ")
}
