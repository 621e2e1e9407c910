package sbatch

import (
	"strconv"
	"strings"

	"github.com/tether-hpc/tether/backends"
	"github.com/tether-hpc/tether/backends/internal/slurm"
	"github.com/tether-hpc/tether/internal/units"
)

// columns says where each field stands in a line of squeue or sacct
// output, and how its exit field reads.
type columns struct {
	split                                                     int // strings.SplitN's n; -1 for all
	id, state, reason, exit, nodes, submit, start, end, limit int
	// arrayJob and arrayTask (squeue's ArrayJobID, ArrayTaskID) make an
	// array element's id "<array>_<task>"; sacct's JobID already reads so
	arrayJob, arrayTask int
	readExit            func(string) (code, sig int, ok bool)
}

var (
	// squeueColumns: squeue -h -O squeueFormat (its reason may hold "|").
	squeueColumns = columns{split: 12, id: 0, state: 1, reason: 2, exit: 3, nodes: 4, submit: 5, start: 6, end: 7, limit: 8, arrayJob: 9, arrayTask: 10, readExit: squeueExit}
	// sacctColumns: sacct -n -P -X --format=sacctFormat.
	sacctColumns = columns{split: -1, id: 0, state: 1, exit: 2, reason: 3, nodes: 4, submit: 5, start: 6, end: 7, limit: 8, arrayJob: -1, arrayTask: -1, readExit: slurm.ParseExitPair}
)

// parseLines reads the jobs of squeue or sacct output. Lines that do not
// parse are skipped, and so are array and het job ids (not tether's).
func parseLines(raw []byte, c columns) []backends.JobStatus {
	var out []backends.JobStatus
	for _, line := range strings.Split(string(raw), "\n") {
		f := strings.SplitN(strings.TrimRight(line, "\r"), "|", c.split)
		if len(f) < 9 {
			continue
		}
		id := strings.TrimSpace(f[c.id])
		if c.arrayTask >= 0 && len(f) > c.arrayTask {
			if task := strings.TrimSpace(f[c.arrayTask]); isNum(task) {
				id = strings.TrimSpace(f[c.arrayJob]) + "_" + task
			}
		}
		if !ValidID(id) {
			continue
		}
		st := backends.JobStatus{
			ID:     backends.JobID(id),
			Native: strings.TrimSpace(f[c.state]),
			Reason: reason(f[c.reason]),
			Nodes:  slurm.ExpandHostlist(f[c.nodes]),
			Submit: slurm.ParseTime(f[c.submit]),
			Start:  slurm.ParseTime(f[c.start]),
			End:    slurm.ParseTime(f[c.end]),
		}
		st.State = slurm.MapState(st.Native)
		if code, sig, ok := c.readExit(f[c.exit]); ok && st.State.Terminal() {
			setExit(&st, code, sig)
		}
		if lim := units.ParseLimit(f[c.limit]); lim > 0 && !st.Start.IsZero() {
			st.Deadline = st.Start.Add(lim)
		}
		st.PendingStart()
		out = append(out, st)
	}
	return out
}

func isNum(s string) bool { _, err := strconv.ParseUint(s, 10, 64); return err == nil }

// ValidID accepts a job id ("1234") and an array element's ("1234_7").
func ValidID(id string) bool {
	a, t, ok := strings.Cut(id, "_")
	return isNum(a) && (!ok || isNum(t))
}

// ParseSqueue reads the output of squeue -h -O squeueFormat.
func ParseSqueue(raw []byte) []backends.JobStatus { return parseLines(raw, squeueColumns) }

// ParseSacct reads sacct -n -P -X --format=sacctFormat.
func ParseSacct(raw []byte) map[backends.JobID]backends.JobStatus {
	out := map[backends.JobID]backends.JobStatus{}
	for _, st := range parseLines(raw, sacctColumns) {
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
