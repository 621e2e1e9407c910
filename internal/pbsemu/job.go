package pbsemu

import (
	"sort"
	"strconv"
	"strings"
	"time"
)

// Job substates (OpenPBS job.h) that the emulator uses.
const (
	subQueued     = 10
	subHeld       = 20
	subDepHold    = 22
	subWaiting    = 30
	subPrerun     = 41
	subRunning    = 42
	subStageout   = 51
	subBegun      = 70 // JOB_SUBSTATE_BEGUN: a job array whose first subjob has run
	subTerminated = 91
	subFinished   = 92
	subFailed     = 93
)

// Exit_status of a job the MoM killed for a limit (job.h JOB_EXEC_KILL_*).
const (
	execKillMem      = -27 // JOB_EXEC_KILL_MEM
	execKillCPUT     = -28 // JOB_EXEC_KILL_CPUT
	execKillWalltime = -29 // JOB_EXEC_KILL_WALLTIME
)

// jobFormatVersion is the format version of jobs/<seq>/job.json.
const jobFormatVersion = 1

// Dep is one dependency of a job on another: "afterok" on 8.pbshost, or the
// reverse edge "beforeok" stored on the parent.
type Dep struct {
	Type  string `json:"type"`
	JobID string `json:"job_id"`
	Done  bool   `json:"done,omitempty"` // satisfied (child side)
}

// Job is a job as the server keeps it (persisted as jobs/<seq>/job.json).
type Job struct {
	V          int    `json:"v"`
	Seq        int    `json:"seq"`
	ID         string `json:"id"`
	Name       string `json:"name"`
	User       string `json:"user"`
	UID        int    `json:"uid"`
	GID        int    `json:"gid"`
	Owner      string `json:"owner"`
	Queue      string `json:"queue"`
	Account    string `json:"account,omitempty"`
	Project    string `json:"project"`
	State      string `json:"state"`
	Substate   int    `json:"substate"`
	HoldTypes  string `json:"hold_types"`
	JoinPath   string `json:"join_path"`
	KeepFiles  string `json:"keep_files"`
	MailPoints string `json:"mail_points"`
	MailUsers  string `json:"mail_users,omitempty"`
	Checkpoint string `json:"checkpoint"`
	Priority   int    `json:"priority"`
	Rerunable  bool   `json:"rerunable"`
	OutputPath string `json:"output_path"`
	ErrorPath  string `json:"error_path"`
	ShellPath  string `json:"shell_path,omitempty"`
	Umask      string `json:"umask,omitempty"`

	Resources ResourceRequest `json:"resources"`

	VariableList []KeyVal `json:"variable_list"`
	SubmitArgs   string   `json:"submit_args"`
	SubmitHost   string   `json:"submit_host"`
	Workdir      string   `json:"workdir"`
	Home         string   `json:"home"`
	Shell        string   `json:"shell"`
	Executable   string   `json:"executable,omitempty"`
	Args         []string `json:"args,omitempty"`

	Ctime         int64 `json:"ctime"`
	Qtime         int64 `json:"qtime"`
	Etime         int64 `json:"etime,omitempty"`
	Mtime         int64 `json:"mtime"`
	Stime         int64 `json:"stime,omitempty"`
	ObitTime      int64 `json:"obittime,omitempty"`
	HistoryTime   int64 `json:"history_time,omitempty"`
	ExecutionTime int64 `json:"execution_time,omitempty"`
	ExitingSince  int64 `json:"exiting_since_ms,omitempty"`

	ExecHost   string `json:"exec_host,omitempty"`
	ExecVnode  string `json:"exec_vnode,omitempty"`
	Slots      []int  `json:"slots,omitempty"`
	SessionID  int    `json:"session_id,omitempty"`
	Comment    string `json:"comment,omitempty"`
	RunCount   int    `json:"run_count"`
	ExitStatus *int   `json:"exit_status,omitempty"`
	Stageout   *int   `json:"stageout_status,omitempty"`
	Used       *Usage `json:"used,omitempty"`

	Depends []Dep `json:"depends,omitempty"`

	MomPID     int    `json:"mom_pid,omitempty"`
	Deleted    bool   `json:"deleted,omitempty"`
	DeletedBy  string `json:"deleted_by,omitempty"`
	Force      bool   `json:"force,omitempty"`
	Signaled   bool   `json:"signaled,omitempty"`
	Walltimed  bool   `json:"walltimed,omitempty"`
	LimitKill  string `json:"limit_kill,omitempty"` // walltime, cput or mem
	QdelExit   string `json:"qdel_exit,omitempty"`  // qdel_exit_status of this job ("": the server's)
	Lost       bool   `json:"lost,omitempty"`
	RunComment string `json:"run_comment,omitempty"`

	// Job arrays: the parent ("17[].pbshost") has Array; a subjob
	// ("17[5].pbshost") has ArrayID (the parent's id) and ArrayIndex.
	Array      *ArrayInfo `json:"array,omitempty"`
	ArrayID    string     `json:"array_id,omitempty"`
	ArrayIndex int        `json:"array_index,omitempty"`
}

// Usage is resources_used.
type Usage struct {
	CPUPercent int   `json:"cpupercent"`
	CPUT       int   `json:"cput"`
	MemKB      int64 `json:"mem_kb"`
	NCPUs      int   `json:"ncpus"`
	VmemKB     int64 `json:"vmem_kb"`
	Walltime   int   `json:"walltime"`
}

// Attr is one job/server attribute as qstat receives it (PBS struct attrl).
type Attr struct {
	Name     string `json:"n"`
	Resource string `json:"r,omitempty"`
	Value    string `json:"v"`
}

// timeAttrs are the attributes qstat prints through ctime(3); the server
// sends them as epoch seconds.
var timeAttrs = map[string]bool{
	"ctime": true, "etime": true, "stime": true, "mtime": true, "qtime": true,
	"Execution_Time": true, "reserve_start": true, "reserve_end": true,
}

// ctimeLayout is the layout of C's ctime(3) without the newline.
const ctimeLayout = "Mon Jan _2 15:04:05 2006"

func ctime(epoch int64) string { return time.Unix(epoch, 0).Format(ctimeLayout) }

// runComment is the scheduler's comment when it starts a job.
func runComment(t time.Time, vnode string) string {
	return "Job run at " + t.Format("Mon Jan 02 at 15:04") + " on " + vnode
}

func (j *Job) hasHold(h byte) bool { return strings.IndexByte(j.HoldTypes, h) >= 0 }

func (j *Job) addHold(h byte) {
	if j.hasHold(h) {
		return
	}
	s := strings.ReplaceAll(j.HoldTypes, "n", "") + string(h)
	// OpenPBS prints hold types in the order u, o, s, p.
	var out []byte
	for _, c := range "uosp" {
		if strings.ContainsRune(s, c) {
			out = append(out, byte(c))
		}
	}
	j.HoldTypes = string(out)
}

func (j *Job) removeHold(h byte) {
	s := strings.ReplaceAll(j.HoldTypes, string(h), "")
	if s == "" {
		s = "n"
	}
	j.HoldTypes = s
}

func (j *Job) finished() bool { return j.State == "F" }

// done reports whether the job has ended: F, or X for a subjob whose
// array is still alive.
func (j *Job) done() bool { return j.State == "F" || j.State == "X" }

// isSubjob reports whether the job is a subjob of a job array.
func (j *Job) isSubjob() bool { return j.ArrayID != "" }

// qdelExit is the qdel_exit_status that applies to the job.
func (j *Job) qdelExit(cfg *Config) string {
	if j.QdelExit != "" {
		return j.QdelExit
	}
	return cfg.QdelExitStatus
}

// depString prints the depend attribute: "afterok:8.pbshost@pbshost".
func (j *Job) depString(server string) string {
	byType := map[string][]string{}
	var order []string
	for _, d := range j.Depends {
		if d.Done {
			continue // a satisfied dependency leaves the attribute (07_depend_afterok-2)
		}
		if _, ok := byType[d.Type]; !ok {
			order = append(order, d.Type)
		}
		byType[d.Type] = append(byType[d.Type], d.JobID+"@"+server)
	}
	parts := make([]string, 0, len(order))
	for _, t := range order {
		parts = append(parts, t+":"+strings.Join(byType[t], ":"))
	}
	return strings.Join(parts, ",")
}

// variableListString encodes Variable_List as the server sends it: name=value
// pairs joined by commas, commas inside values escaped with a backslash.
func variableListString(vl []KeyVal) string {
	parts := make([]string, len(vl))
	for i, kv := range vl {
		parts[i] = kv.K + "=" + strings.ReplaceAll(kv.V, ",", `\,`)
	}
	return strings.Join(parts, ",")
}

// Attrs returns the job's attributes in the order the OpenPBS server sends
// them (job attribute definition order), as seen in the captures.
func (j *Job) Attrs(cfg *Config, now time.Time) []Attr {
	var a []Attr
	add := func(n, v string) { a = append(a, Attr{Name: n, Value: v}) }
	addR := func(n, r, v string) { a = append(a, Attr{Name: n, Resource: r, Value: v}) }
	add("Job_Name", j.Name)
	add("Job_Owner", j.Owner)
	if u := j.usage(now); u != nil {
		addR("resources_used", "cpupercent", strconv.Itoa(u.CPUPercent))
		addR("resources_used", "cput", formatDuration(u.CPUT))
		addR("resources_used", "mem", strconv.FormatInt(u.MemKB, 10)+"kb")
		addR("resources_used", "ncpus", strconv.Itoa(u.NCPUs))
		addR("resources_used", "vmem", strconv.FormatInt(u.VmemKB, 10)+"kb")
		addR("resources_used", "walltime", formatDuration(u.Walltime))
	}
	add("job_state", j.State)
	add("queue", j.Queue)
	add("server", cfg.ServerName)
	if j.Account != "" {
		add("Account_Name", j.Account)
	}
	// A subjob gets the parent's attributes except Checkpoint, depend,
	// Execution_Time, Hold_Types and Submit_arguments (array_func.c
	// attrs_to_copy; capture 13, 17[2]).
	sub := j.isSubjob()
	if !sub {
		add("Checkpoint", j.Checkpoint)
	}
	add("ctime", strconv.FormatInt(j.Ctime, 10))
	if dep := j.depString(cfg.ServerName); dep != "" && !sub {
		add("depend", dep)
	}
	add("Error_Path", j.ErrorPath)
	if j.ExecHost != "" {
		add("exec_host", j.ExecHost)
		add("exec_vnode", j.ExecVnode)
	}
	if j.ExecutionTime != 0 && !sub {
		add("Execution_Time", strconv.FormatInt(j.ExecutionTime, 10))
	}
	if !sub {
		add("Hold_Types", j.HoldTypes)
	}
	add("Join_Path", j.JoinPath)
	add("Keep_Files", j.KeepFiles)
	add("Mail_Points", j.MailPoints)
	if j.MailUsers != "" {
		add("Mail_Users", j.MailUsers)
	}
	add("mtime", strconv.FormatInt(j.Mtime, 10))
	add("Output_Path", j.OutputPath)
	add("Priority", strconv.Itoa(j.Priority))
	add("qtime", strconv.FormatInt(j.Qtime, 10))
	if j.Rerunable {
		add("Rerunable", "True")
	} else {
		add("Rerunable", "False")
	}
	for _, n := range j.Resources.names() {
		addR("Resource_List", n, j.Resources.List[n])
	}
	if j.Stime != 0 {
		add("stime", strconv.FormatInt(j.Stime, 10))
	}
	if j.ObitTime != 0 {
		add("obittime", ctime(j.ObitTime))
	}
	if j.ShellPath != "" {
		add("Shell_Path_List", j.ShellPath)
	}
	if j.SessionID != 0 {
		add("session_id", strconv.Itoa(j.SessionID))
	}
	// jobdir comes with the session (substate 42) and stays once finished;
	// a job still at substate 41 has neither (03_tiny_running).
	if j.RunCount > 0 && (j.SessionID != 0 || j.done()) {
		add("jobdir", j.Home)
	}
	add("substate", strconv.Itoa(j.Substate))
	add("Variable_List", variableListString(j.VariableList))
	if j.Umask != "" {
		add("umask", j.Umask)
	}
	if j.Comment != "" {
		add("comment", j.Comment)
	}
	if j.Etime != 0 {
		add("etime", strconv.FormatInt(j.Etime, 10))
	}
	if j.RunCount > 0 {
		add("run_count", strconv.Itoa(j.RunCount))
	}
	if j.Stageout != nil {
		add("Stageout_status", strconv.Itoa(*j.Stageout))
	}
	if j.ExitStatus != nil {
		add("Exit_status", strconv.Itoa(*j.ExitStatus))
	}
	if !sub {
		add("Submit_arguments", j.SubmitArgs)
	}
	if j.Executable != "" {
		add("executable", "<jsdl-hpcpa:Executable>"+j.Executable+"</jsdl-hpcpa:Executable>")
		if len(j.Args) > 0 {
			var b strings.Builder
			for _, x := range j.Args {
				b.WriteString("<jsdl-hpcpa:Argument>" + x + "</jsdl-hpcpa:Argument>")
			}
			add("argument_list", b.String())
		}
	}
	if ar := j.Array; ar != nil {
		add("array", "True")
		add("array_state_count", ar.stateCount(j))
		add("array_indices_submitted", ar.Submitted)
		add("array_indices_remaining", ar.remaining())
	}
	if sub {
		add("array_id", j.ArrayID)
		add("array_index", strconv.Itoa(j.ArrayIndex))
	}
	if j.HistoryTime != 0 {
		add("history_timestamp", strconv.FormatInt(j.HistoryTime, 10))
	}
	add("project", j.Project)
	add("Submit_Host", j.SubmitHost)
	if j.Array != nil && j.Array.MaxRun != nil {
		add("max_run_subjobs", strconv.Itoa(*j.Array.MaxRun))
	}
	return a
}

// usage returns resources_used as shown now: the MoM's last report, with
// the walltime of a running job advancing.
func (j *Job) usage(now time.Time) *Usage {
	if j.Used == nil {
		return nil
	}
	u := *j.Used
	if j.State == "R" && j.Stime != 0 {
		u.Walltime = int(now.Unix() - j.Stime)
	}
	return &u
}

// sortedJobs returns jobs ordered by sequence number.
func sortedJobs(m map[int]*Job) []*Job {
	js := make([]*Job, 0, len(m))
	for _, j := range m {
		js = append(js, j)
	}
	sort.Slice(js, func(a, b int) bool { return js[a].Seq < js[b].Seq })
	return js
}
