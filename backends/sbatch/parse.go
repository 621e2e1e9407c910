package sbatch

import (
	"strconv"
	"strings"

	"github.com/tether-hpc/tether/backends"
	"github.com/tether-hpc/tether/backends/internal/slurm"
)

// ParseSqueue reads the output of squeue -h -O squeueFormat. Lines that do
// not parse are skipped.
func ParseSqueue(raw []byte) []backends.JobStatus {
	var out []backends.JobStatus
	for _, line := range strings.Split(string(raw), "\n") {
		f := strings.SplitN(strings.TrimRight(line, "\r"), "|", 10)
		if len(f) < 9 {
			continue
		}
		id := strings.TrimSpace(f[0])
		if _, err := strconv.ParseUint(id, 10, 64); err != nil {
			continue // array or het job ids are not tether's
		}
		st := backends.JobStatus{
			ID:     backends.JobID(id),
			Native: strings.TrimSpace(f[1]),
			Reason: reason(f[2]),
			Nodes:  slurm.ExpandHostlist(f[4]),
			Submit: slurm.ParseTime(f[5]),
			Start:  slurm.ParseTime(f[6]),
			End:    slurm.ParseTime(f[7]),
		}
		st.State = slurm.MapState(st.Native)
		if code, sig, ok := squeueExit(f[3]); ok && st.State.Terminal() {
			setExit(&st, code, sig)
		}
		if lim := slurm.ParseLimit(f[8]); lim > 0 && !st.Start.IsZero() {
			st.Deadline = st.Start.Add(lim)
		}
		out = append(out, st)
	}
	return out
}

// ParseSacct reads sacct -n -P -X --format=sacctFormat.
func ParseSacct(raw []byte) map[backends.JobID]backends.JobStatus {
	out := map[backends.JobID]backends.JobStatus{}
	for _, line := range strings.Split(string(raw), "\n") {
		f := strings.Split(strings.TrimRight(line, "\r"), "|")
		if len(f) < 9 {
			continue
		}
		id := strings.TrimSpace(f[0])
		if _, err := strconv.ParseUint(id, 10, 64); err != nil {
			continue
		}
		st := backends.JobStatus{
			ID:     backends.JobID(id),
			Native: strings.TrimSpace(f[1]),
			Reason: reason(f[3]),
			Nodes:  slurm.ExpandHostlist(f[4]),
			Submit: slurm.ParseTime(f[5]),
			Start:  slurm.ParseTime(f[6]),
			End:    slurm.ParseTime(f[7]),
		}
		st.State = slurm.MapState(st.Native)
		if code, sig, ok := slurm.ParseExitPair(f[2]); ok && st.State.Terminal() {
			setExit(&st, code, sig)
		}
		if lim := slurm.ParseLimit(f[8]); lim > 0 && !st.Start.IsZero() {
			st.Deadline = st.Start.Add(lim)
		}
		out[st.ID] = st
	}
	return out
}

// setExit records how a job ended: a job killed by a signal has no exit
// code of its own (Slurm shows 0 beside the signal), as the REST API says.
func setExit(st *backends.JobStatus, code, sig int) {
	st.Signal = sig
	if sig == 0 {
		st.ExitCode = &code
	}
}

// squeueExit reads squeue's exit_code field: a raw wait status on 22.05
// ("768" is exit 3), "code:signal" on 24.11 ("3:0"). A job killed by a
// signal has no exit code of its own.
func squeueExit(s string) (code, sig int, ok bool) {
	s = strings.TrimSpace(s)
	if c, g, ok := slurm.ParseExitPair(s); ok {
		return c, g, true
	}
	raw, err := strconv.Atoi(s)
	if err != nil {
		return 0, 0, false
	}
	c, g := slurm.WaitStatus(raw)
	return c, g, true
}

func reason(s string) string {
	s = strings.TrimSpace(s)
	if s == "None" || s == "(null)" {
		return ""
	}
	return s
}
