package pbs

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/tether-hpc/tether/backends"
	"github.com/tether-hpc/tether/backends/internal/slurm"
)

// qstatDoc is the part of `qstat -f -F json` tether reads.
type qstatDoc struct {
	Jobs map[string]qstatJob `json:"Jobs"`
}

type qstatJob struct {
	JobState     string          `json:"job_state"`
	Substate     json.Number     `json:"substate"`
	ExitStatus   *int            `json:"Exit_status"`
	Comment      string          `json:"comment"`
	ExecHost     string          `json:"exec_host"`
	Ctime        string          `json:"ctime"`
	Qtime        string          `json:"qtime"`
	Stime        string          `json:"stime"`
	Obittime     string          `json:"obittime"`
	Mtime        string          `json:"mtime"`
	ResourceList json.RawMessage `json:"Resource_List"`
}

// PBS times: "Thu Nov 26 19:59:18 2026", in the server's local time.
func pbsTime(s string) time.Time {
	t, err := time.ParseInLocation("Mon Jan 2 15:04:05 2006", strings.Join(strings.Fields(s), " "), time.Local)
	if err != nil {
		return time.Time{}
	}
	return t
}

// ParseQstat reads `qstat -x -f -F json` output. Jobs are keyed by their
// full id ("12.pbshost").
func ParseQstat(raw []byte) (map[backends.JobID]backends.JobStatus, error) {
	// qstat prints the JSON document even when it reports unknown ids on
	// stderr; an empty stdout is no document at all.
	if len(strings.TrimSpace(string(raw))) == 0 {
		return map[backends.JobID]backends.JobStatus{}, nil
	}
	var doc qstatDoc
	if err := json.Unmarshal(raw, &doc); err != nil {
		return nil, fmt.Errorf("qstat printed no JSON document: %w", err)
	}
	out := make(map[backends.JobID]backends.JobStatus, len(doc.Jobs))
	for id, j := range doc.Jobs {
		out[backends.JobID(id)] = j.status(id)
	}
	return out, nil
}

// PBS exit statuses below zero are the server's JOB_EXEC_* codes.
const (
	execKillMem      = -27
	execKillWalltime = -29
	execMomFail      = -20 // mother superior connection failed: node failure
)

func (j qstatJob) status(id string) backends.JobStatus {
	st := backends.JobStatus{ID: backends.JobID(id), Native: j.JobState, Reason: j.Comment}
	if sub := j.Substate.String(); sub != "" {
		st.Native += "/" + sub
	}
	st.Submit = pbsTime(j.Ctime)
	st.Start = pbsTime(j.Stime)
	st.End = pbsTime(j.Obittime)
	if host, _, ok := strings.Cut(j.ExecHost, "/"); ok && host != "" {
		seen := map[string]bool{}
		for _, part := range strings.Split(j.ExecHost, "+") {
			h, _, _ := strings.Cut(part, "/")
			if h != "" && !seen[h] {
				seen[h] = true
				st.Nodes = append(st.Nodes, h)
			}
		}
	}
	var rl struct {
		Walltime string `json:"walltime"`
	}
	if json.Unmarshal(j.ResourceList, &rl) == nil && rl.Walltime != "" && !st.Start.IsZero() {
		st.Deadline = st.Start.Add(slurm.ParseLimit(rl.Walltime))
	}
	sub, _ := strconv.Atoi(j.Substate.String())
	switch j.JobState {
	case "Q", "W", "T":
		st.State = backends.Pending
	case "H":
		st.State, st.Reason = backends.Pending, firstNonEmpty(j.Comment, "held")
	case "R", "B":
		st.State = backends.Running
	case "E":
		st.State = backends.Completing
	case "S", "U":
		st.State = backends.Suspended
	case "F", "X":
		st.State, st.ExitCode, st.Signal = finished(j.ExitStatus, sub)
	default:
		st.State = backends.Unknown
	}
	return st
}

func firstNonEmpty(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// finished maps a finished job's Exit_status (and substate) to a state.
func finished(exit *int, substate int) (backends.State, *int, int) {
	if exit == nil {
		// deleted while queued or held (substate 91), or by the server
		return backends.Cancelled, nil, 0
	}
	e := *exit
	switch {
	case e == 0:
		return backends.Completed, exit, 0
	case e == execKillWalltime:
		return backends.Timeout, nil, 0
	case e == execKillMem || e == -28:
		return backends.OutOfMemory, nil, 0
	case e == execMomFail:
		return backends.NodeFail, nil, 0
	case e < 0:
		return backends.Failed, nil, 0
	case e > 256:
		sig := e - 256
		if substate == 91 {
			return backends.Cancelled, nil, sig // qdel
		}
		return backends.Failed, nil, sig
	}
	return backends.Failed, exit, 0
}
