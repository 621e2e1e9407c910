package pbs

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tether-hpc/tether/backends"
	"github.com/tether-hpc/tether/internal/units"
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
	// Estimated is the scheduler's estimate for a queued job (OpenPBS
	// sets estimated.start_time when it calendars jobs: strict ordering
	// or backfill_depth).
	Estimated struct {
		StartTime string `json:"start_time"`
	} `json:"estimated"`
}

// decodeQstat decodes qstat's JSON. Some qstat builds print invalid JSON
// for odd values of job variables (qsub -V copies the whole environment):
// backslashes JSON does not know ("\\'", "\\,") or raw control characters
// inside strings (OpenPBS issues 2541, pull 2049). Those are repaired and
// the document decoded again, so one such job does not hide all others.
func decodeQstat(raw []byte, v any) error {
	err := json.Unmarshal(raw, v)
	if err == nil {
		return nil
	}
	if json.Unmarshal(repairJSON(raw), v) == nil {
		return nil
	}
	return fmt.Errorf("qstat printed no JSON document: %w", err)
}

// repairJSON escapes stray backslashes and control characters inside the
// strings of a JSON document.
func repairJSON(raw []byte) []byte {
	out := make([]byte, 0, len(raw)+64)
	in := false
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		switch {
		case !in:
			in = c == '"'
			out = append(out, c)
		case c == '"':
			in = false
			out = append(out, c)
		case c == '\\' && i+1 < len(raw) && validEscape(raw[i+1:]):
			out = append(out, c, raw[i+1])
			i++
		case c == '\\':
			out = append(out, '\\', '\\')
		case c < 0x20:
			out = append(out, fmt.Sprintf("\\u%04x", c)...)
		default:
			out = append(out, c)
		}
	}
	return out
}

// validEscape reports whether what follows a backslash is a JSON escape.
func validEscape(b []byte) bool {
	switch b[0] {
	case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
		return true
	case 'u':
		if len(b) < 5 {
			return false
		}
		for _, h := range b[1:5] {
			if !strings.ContainsRune("0123456789abcdefABCDEF", rune(h)) {
				return false
			}
		}
		return true
	}
	return false
}

// taggedJob is what FindByTag reads of a job.
type taggedJob struct {
	Ctime        string         `json:"ctime"`
	VariableList map[string]any `json:"Variable_List"`
}

// findTagged finds the job whose Variable_List has TETHER_TAG=tag in a
// `qstat -x -f -F json` document; of several, the first submitted.
func findTagged(raw []byte, tag string) (backends.JobID, bool, error) {
	if len(strings.TrimSpace(string(raw))) == 0 {
		return "", false, errors.New("qstat printed nothing")
	}
	var doc struct {
		Jobs map[string]taggedJob `json:"Jobs"`
	}
	if err := decodeQstat(raw, &doc); err != nil {
		return "", false, err
	}
	var best string
	var bestT time.Time
	for id, j := range doc.Jobs {
		if v, _ := j.VariableList[tagVar].(string); v != tag {
			continue
		}
		t := pbsTime(j.Ctime)
		if best == "" || t.Before(bestT) || t.Equal(bestT) && seqOf(id) < seqOf(best) {
			best, bestT = id, t
		}
	}
	return backends.JobID(best), best != "", nil
}

// seqOf is the sequence number of a job id ("12.pbshost" -> 12).
func seqOf(id string) uint64 {
	seq, _, _ := strings.Cut(id, ".")
	n, _ := strconv.ParseUint(seq, 10, 64)
	return n
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
	if err := decodeQstat(raw, &doc); err != nil {
		return nil, err
	}
	out := make(map[backends.JobID]backends.JobStatus, len(doc.Jobs))
	for id, j := range doc.Jobs {
		if (j.JobState == "X" || j.JobState == "F") && j.Comment == subjobFinished {
			// a finished subjob whose own record is gone (no job
			// history) is shown with its array's attributes, Exit_status
			// included: not its own end. Left out like a purged job:
			// its exit file decides.
			continue
		}
		out[backends.JobID(id)] = j.status(id)
	}
	return out, nil
}

// subjobFinished is the comment PBS shows for a finished subjob it
// keeps no record of (OpenPBS status_subjob: the array's attributes).
const subjobFinished = "Subjob finished"

// substateTerminated is JOB_SUBSTATE_TERMINATED (OpenPBS job.h): the
// job was deleted, whatever its Exit_status says. (92 is FINISHED, 93
// FAILED: Exit_status tells those apart well enough.)
const substateTerminated = 91

// Exit_status values below zero are the special exit values the MoM and
// the server set (OpenPBS src/include/job.h, JOB_EXEC_*; checked against
// the v23.06.06 tag). There is no -31: job.h ends at -30.
const (
	jobExecFail1          = -1  // JOB_EXEC_FAIL1: exec failed, before files, no retry
	jobExecFail2          = -2  // JOB_EXEC_FAIL2: exec failed, after files, no retry
	jobExecRetry          = -3  // JOB_EXEC_RETRY: exec failed, do retry
	jobExecInitAbt        = -4  // JOB_EXEC_INITABT: aborted on MoM initialization
	jobExecInitRst        = -5  // JOB_EXEC_INITRST: aborted on MoM init, checkpointed, no migrate
	jobExecInitRmg        = -6  // JOB_EXEC_INITRMG: aborted on MoM init, checkpointed, ok migrate
	jobExecBadResrt       = -7  // JOB_EXEC_BADRESRT: restart failed
	jobExecFailUID        = -10 // JOB_EXEC_FAILUID: invalid uid/gid for the job
	jobExecRerun          = -11 // JOB_EXEC_RERUN: rerun (qrerun, node busy)
	jobExecChkp           = -12 // JOB_EXEC_CHKP: checkpointed and killed
	jobExecFailPassword   = -13 // JOB_EXEC_FAIL_PASSWORD: bad password
	jobExecRerunSisFail   = -14 // JOB_EXEC_RERUN_SIS_FAIL: a sister node failed (rerun, or exit with -r n)
	jobExecQueRst         = -15 // JOB_EXEC_QUERST: requeue for restart from checkpoint
	jobExecFailHookRerun  = -16 // JOB_EXEC_FAILHOOK_RERUN: a hook rejected the job, requeue
	jobExecFailHookDelete = -17 // JOB_EXEC_FAILHOOK_DELETE: a hook rejected the job, delete
	jobExecHookRerun      = -18 // JOB_EXEC_HOOK_RERUN: a hook asked for a requeue
	jobExecHookDelete     = -19 // JOB_EXEC_HOOK_DELETE: a hook asked for a delete
	jobExecRerunMSFail    = -20 // JOB_EXEC_RERUN_MS_FAIL: mother superior connection failed
	jobExecFailSecurity   = -21 // JOB_EXEC_FAIL_SECURITY: security breach in the PBS directory
	jobExecHookError      = -22 // JOB_EXEC_HOOKERROR: hook exception or timeout
	jobExecFailKRB5       = -23 // JOB_EXEC_FAIL_KRB5: no kerberos credentials
	jobExecKillNCPUsBurst = -24 // JOB_EXEC_KILL_NCPUS_BURST: exceeded ncpus (burst)
	jobExecKillNCPUsSum   = -25 // JOB_EXEC_KILL_NCPUS_SUM: exceeded ncpus (sum)
	jobExecKillVmem       = -26 // JOB_EXEC_KILL_VMEM: exceeded vmem
	jobExecKillMem        = -27 // JOB_EXEC_KILL_MEM: exceeded mem
	jobExecKillCPUT       = -28 // JOB_EXEC_KILL_CPUT: exceeded cput
	jobExecKillWalltime   = -29 // JOB_EXEC_KILL_WALLTIME: exceeded walltime
	jobExecJoinJob        = -30 // JOB_EXEC_JOINJOB: join job error
)

// jobExec is what tether makes of one JOB_EXEC_* value.
type jobExec struct {
	name   string // the job.h constant
	state  backends.State
	reason string
	limit  string // the resource whose limit PBS killed the job for ("" for none)
}

// jobExecs maps the JOB_EXEC_* values onto states; values not listed are
// failures of PBS itself (Failed).
var jobExecs = map[int]jobExec{
	jobExecFail1:          {"JOB_EXEC_FAIL1", backends.Failed, "PBS could not start the job (before its files were set up)", ""},
	jobExecFail2:          {"JOB_EXEC_FAIL2", backends.Failed, "PBS could not start the job (after its files were set up)", ""},
	jobExecRetry:          {"JOB_EXEC_RETRY", backends.BootFail, "PBS could not start the job on its node (retryable)", ""},
	jobExecInitAbt:        {"JOB_EXEC_INITABT", backends.BootFail, "the MoM aborted the job when it restarted (retryable)", ""},
	jobExecInitRst:        {"JOB_EXEC_INITRST", backends.Failed, "the MoM aborted the checkpointed job when it restarted", ""},
	jobExecInitRmg:        {"JOB_EXEC_INITRMG", backends.Failed, "the MoM aborted the checkpointed job when it restarted", ""},
	jobExecBadResrt:       {"JOB_EXEC_BADRESRT", backends.Failed, "the job could not be restarted from its checkpoint", ""},
	jobExecFailUID:        {"JOB_EXEC_FAILUID", backends.Failed, "invalid uid or gid for the job on the execution host", ""},
	jobExecRerun:          {"JOB_EXEC_RERUN", backends.Failed, "PBS asked to rerun the job, which is not rerunnable", ""},
	jobExecChkp:           {"JOB_EXEC_CHKP", backends.Failed, "the job was checkpointed and killed", ""},
	jobExecFailPassword:   {"JOB_EXEC_FAIL_PASSWORD", backends.Failed, "the job's password was refused", ""},
	jobExecRerunSisFail:   {"JOB_EXEC_RERUN_SIS_FAIL", backends.NodeFail, "a sister node of the job failed", ""},
	jobExecQueRst:         {"JOB_EXEC_QUERST", backends.Failed, "the job was requeued for a restart from its checkpoint", ""},
	jobExecFailHookRerun:  {"JOB_EXEC_FAILHOOK_RERUN", backends.Failed, "a hook rejected the job", ""},
	jobExecFailHookDelete: {"JOB_EXEC_FAILHOOK_DELETE", backends.Failed, "a hook rejected the job", ""},
	jobExecHookRerun:      {"JOB_EXEC_HOOK_RERUN", backends.Failed, "a hook asked to requeue the job", ""},
	jobExecHookDelete:     {"JOB_EXEC_HOOK_DELETE", backends.Failed, "a hook asked to delete the job", ""},
	jobExecRerunMSFail:    {"JOB_EXEC_RERUN_MS_FAIL", backends.NodeFail, "PBS lost the connection to the job's mother superior node", ""},
	jobExecFailSecurity:   {"JOB_EXEC_FAIL_SECURITY", backends.Failed, "PBS found a security problem in the job's directory", ""},
	jobExecHookError:      {"JOB_EXEC_HOOKERROR", backends.Failed, "a hook failed or timed out", ""},
	jobExecFailKRB5:       {"JOB_EXEC_FAIL_KRB5", backends.Failed, "no kerberos credentials for the job", ""},
	jobExecKillNCPUsBurst: {"JOB_EXEC_KILL_NCPUS_BURST", backends.Failed, "PBS killed the job for using more CPUs than it asked for (ncpus, burst)", "ncpus"},
	jobExecKillNCPUsSum:   {"JOB_EXEC_KILL_NCPUS_SUM", backends.Failed, "PBS killed the job for using more CPUs than it asked for (ncpus, sum)", "ncpus"},
	jobExecKillVmem:       {"JOB_EXEC_KILL_VMEM", backends.OutOfMemory, "PBS killed the job for exceeding its virtual memory limit (vmem)", ""},
	jobExecKillMem:        {"JOB_EXEC_KILL_MEM", backends.OutOfMemory, "PBS killed the job for exceeding its memory limit (mem)", ""},
	jobExecKillCPUT:       {"JOB_EXEC_KILL_CPUT", backends.Failed, "PBS killed the job for exceeding its CPU time limit (cput)", "cput"},
	jobExecKillWalltime:   {"JOB_EXEC_KILL_WALLTIME", backends.Timeout, "PBS killed the job at its walltime limit", ""},
	jobExecJoinJob:        {"JOB_EXEC_JOINJOB", backends.Failed, "the job failed to join its sister nodes", ""},
}

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
		st.Deadline = st.Start.Add(units.ParseLimit(rl.Walltime))
	}
	sub, _ := strconv.Atoi(j.Substate.String())
	switch j.JobState {
	case "Q", "W", "T":
		st.State = backends.Pending
		st.ExpectedStart = pbsTime(j.Estimated.StartTime)
	case "H":
		st.State, st.Reason = backends.Pending, firstNonEmpty(j.Comment, "held")
	case "R", "B":
		st.State = backends.Running
	case "E":
		st.State = backends.Completing
	case "S", "U":
		st.State = backends.Suspended
	case "F", "X":
		var why string
		st.State, st.ExitCode, st.Signal, why = finished(j.ExitStatus, sub)
		if why != "" {
			st.Reason = why
		}
		if j.ExitStatus != nil && sub != substateTerminated {
			st.LimitKill = jobExecs[*j.ExitStatus].limit
		}
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

// finished maps a finished job's Exit_status and substate to a state, the
// scheduler's exit code and signal, and a reason ("" keeps the comment).
func finished(exit *int, substate int) (backends.State, *int, int, string) {
	if substate == substateTerminated {
		// Deleted. Exit_status is whatever the job's top shell ended
		// with: 271 (256+SIGTERM) as captured, 0 as on another 23.06
		// server, 143 from a wrapper that traps SIGTERM. Substate 91 is
		// what says "deleted", so it decides.
		switch {
		case exit == nil:
			return backends.Cancelled, nil, 0, ""
		case *exit > 256:
			return backends.Cancelled, nil, *exit - 256, ""
		case *exit < 0:
			return backends.Cancelled, nil, 0, ""
		}
		return backends.Cancelled, exit, 0, ""
	}
	if exit == nil {
		// deleted by the server (an afterok child of a failed parent)
		return backends.Cancelled, nil, 0, ""
	}
	e := *exit
	switch {
	case e == 0:
		return backends.Completed, exit, 0, ""
	case e < 0:
		x, ok := jobExecs[e]
		if !ok {
			return backends.Failed, nil, 0, fmt.Sprintf("PBS ended the job with special exit status %d", e)
		}
		return x.state, nil, 0, fmt.Sprintf("%s (Exit_status %d, %s)", x.reason, e, x.name)
	case e > 256:
		return backends.Failed, nil, e - 256, ""
	}
	return backends.Failed, exit, 0, ""
}

// qstatQueues is `qstat -Qf -F json` with the server's default queue
// (`qstat -Bf -F json`).
type qstatQueues struct {
	Queue map[string]struct {
		QueueType    string         `json:"queue_type"`
		ResourcesMax map[string]any `json:"resources_max"`
		Enabled      string         `json:"enabled"`
		Started      string         `json:"started"`
	} `json:"Queue"`
}

type qstatServer struct {
	Server map[string]struct {
		DefaultQueue string `json:"default_queue"`
	} `json:"Server"`
}

// ParseQueues reads the execution queues and their resources_max limits
// (walltime, nodect, ncpus) from `qstat -Qf -F json`; defaultQueue (from
// the server's default_queue) is marked Default. Routing queues are left
// out: their limits are their destinations'.
func ParseQueues(raw []byte, defaultQueue string) ([]backends.Partition, error) {
	var q qstatQueues
	if err := decodeQstat(raw, &q); err != nil {
		return nil, err
	}
	var out []backends.Partition
	for _, name := range slices.Sorted(maps.Keys(q.Queue)) {
		e := q.Queue[name]
		if e.QueueType != "" && !strings.EqualFold(e.QueueType, "Execution") {
			continue
		}
		p := backends.Partition{
			Name:     name,
			Kind:     "queue",
			Default:  name == defaultQueue,
			Up:       strings.EqualFold(e.Started, "True"),
			Inactive: !strings.EqualFold(e.Enabled, "True"),
		}
		if w, ok := e.ResourcesMax["walltime"].(string); ok {
			p.MaxTime = units.ParseLimit(w)
		}
		p.MaxNodes = jsonInt(e.ResourcesMax["nodect"])
		p.MaxCPUs = jsonInt(e.ResourcesMax["ncpus"])
		out = append(out, p)
	}
	return out, nil
}

// ParseDefaultQueue reads the server's default_queue from `qstat -Bf -F json`.
func ParseDefaultQueue(raw []byte) string {
	var s qstatServer
	if decodeQstat(raw, &s) != nil {
		return ""
	}
	for _, e := range s.Server {
		return e.DefaultQueue
	}
	return ""
}

// jsonInt reads a qstat JSON number (or a string holding one); 0 if none.
func jsonInt(v any) int {
	switch x := v.(type) {
	case float64:
		return int(x)
	case string:
		n, _ := strconv.Atoi(x)
		return n
	}
	return 0
}
