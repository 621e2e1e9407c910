package monitor

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/tether-hpc/tether/internal/units"
	"github.com/tether-hpc/tether/rundir"
	"github.com/tether-hpc/tether/schema"
)

// DetailVersion is the version of Detail's JSON (tether show --json).
const DetailVersion = 1

// Detail is everything known about one run: what `tether show` prints and
// the monitor's run page renders. It is built from the run's own files and
// one look at the run (through the shared poll cache); building it writes
// nothing.
type Detail struct {
	V         int       `json:"v"`
	RunID     string    `json:"run_id"`
	Site      string    `json:"site"`
	Backend   string    `json:"backend"`
	Key       string    `json:"key,omitempty"`
	RunDir    string    `json:"run_dir"`
	TaskFile  string    `json:"task_file,omitempty"`
	SiteFile  string    `json:"site_file,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	Spec      Spec      `json:"spec"`
	// State is the outcome word, or pending/running while the run lives.
	State string `json:"state"`
	Final bool   `json:"final"`
	// Outcome is the run's outcome line (live while it is not final).
	Outcome     schema.Outcome    `json:"outcome"`
	Attempts    []AttemptDetail   `json:"attempts"`
	Checkpoints []CheckpointView  `json:"checkpoints,omitempty"`
	Results     map[string]string `json:"results,omitempty"`
	// LastHeartbeat is the Task's last heartbeat or progress event.
	LastHeartbeat *time.Time `json:"last_heartbeat,omitempty"`
	Decision      Decided    `json:"decision"`
	// Array runs: the elements' runs (with their outcomes in Outcome).
	Elements []string `json:"elements,omitempty"`
	Logs     LogsView `json:"logs"`
}

// Spec is the summary of the Task as it was submitted.
type Spec struct {
	Name      string   `json:"name"`
	Command   []string `json:"command,omitempty"`
	Script    string   `json:"script,omitempty"` // its first line
	Workdir   string   `json:"workdir,omitempty"`
	Nodes     int      `json:"nodes,omitempty"`
	NTasks    int      `json:"ntasks,omitempty"`
	PerNode   int      `json:"ntasks_per_node,omitempty"`
	CPUs      int      `json:"cpus_per_task,omitempty"`
	GPUs      int      `json:"gpus_per_task,omitempty"`
	Memory    string   `json:"memory,omitempty"`
	Walltime  string   `json:"walltime,omitempty"`
	Launcher  string   `json:"launcher,omitempty"`
	Retries   int      `json:"max_attempts,omitempty"`
	Proceed   string   `json:"proceed,omitempty"`
	ArraySize int      `json:"array_size,omitempty"`
	Array     string   `json:"array,omitempty"` // an element's array run
	Index     *int     `json:"index,omitempty"`
}

// AttemptDetail is one scheduler job of the run.
type AttemptDetail struct {
	N           int           `json:"n"`
	JobID       string        `json:"job_id,omitempty"`
	Reason      string        `json:"reason"`
	Generation  int           `json:"generation,omitempty"`
	SubmittedAt time.Time     `json:"submitted_at"`
	StartedAt   *time.Time    `json:"started_at,omitempty"`
	Host        string        `json:"host,omitempty"`
	EndedAt     *time.Time    `json:"ended_at,omitempty"`
	State       string        `json:"state,omitempty"`
	Nodes       []string      `json:"nodes,omitempty"`
	ExitCode    *int          `json:"exit_code,omitempty"`
	Signal      int           `json:"signal,omitempty"`
	Decision    string        `json:"decision,omitempty"`
	Cause       string        `json:"cause,omitempty"`
	Memory      string        `json:"memory,omitempty"`
	Exclude     []string      `json:"exclude,omitempty"`
	ResumeFrom  string        `json:"resume_from,omitempty"`
	Usage       *schema.Usage `json:"usage,omitempty"`
	Stdout      string        `json:"stdout"`
	Stderr      string        `json:"stderr"`
}

// CheckpointView is one checkpoint the Task reported.
type CheckpointView struct {
	At       time.Time `json:"at"`
	Attempt  int       `json:"attempt,omitempty"`
	Fraction *float64  `json:"fraction,omitempty"`
	Paths    []string  `json:"paths,omitempty"`
	Resume   string    `json:"resume,omitempty"`
	Message  string    `json:"message,omitempty"`
}

// Decided is the decision and what it was made from.
type Decided struct {
	Outcome   string     `json:"outcome"`
	Reason    string     `json:"reason"`
	Cause     string     `json:"cause,omitempty"`
	DecidedAt *time.Time `json:"decided_at,omitempty"`
	DecidedBy string     `json:"decided_by,omitempty"`
	Stuck     string     `json:"stuck,omitempty"`
	// Evidence lists what the run's files and the scheduler say, each a
	// sentence naming its source.
	Evidence []string `json:"evidence"`
}

// LogsView names the run's logs and the commands that print them.
type LogsView struct {
	Stdout   string   `json:"stdout,omitempty"`
	Stderr   string   `json:"stderr,omitempty"`
	Commands []string `json:"commands"`
}

// maxCheckpoints bounds the checkpoints a Detail lists (the latest ones).
const maxCheckpoints = 50

// Detail looks at a run once (without acting; maxAge as for Look) and
// describes it.
func (e *Engine) Detail(ctx context.Context, run rundir.Run, maxAge time.Duration) (*Detail, error) {
	st, err := e.Look(ctx, run, maxAge, NewTracker(run))
	if err != nil {
		return nil, err
	}
	rec := st.Record
	if rec == nil {
		if rec, err = run.Load(); err != nil {
			return nil, err
		}
	}
	return BuildDetail(run, rec, st.Outcome), nil
}

// BuildDetail describes a run from its record, its files and an outcome
// line (final, or live from a look).
func BuildDetail(run rundir.Run, rec *schema.RunRecord, o schema.Outcome) *Detail {
	d := &Detail{V: DetailVersion, RunID: rec.RunID, Site: rec.Site, Backend: rec.Backend, Key: rec.Key,
		RunDir: run.Dir, TaskFile: rec.TaskFile, SiteFile: rec.SiteFile, CreatedAt: rec.CreatedAt,
		Spec: specOf(rec), State: o.Outcome, Final: o.Final, Outcome: o, Results: o.Results}
	sum, cps := readCheckpoints(run.Status())
	d.Checkpoints = cps
	if !sum.LastHeartbeat.IsZero() {
		t := sum.LastHeartbeat
		d.LastHeartbeat = &t
	}
	if d.Results == nil && len(sum.Results) > 0 {
		d.Results = sum.Results
	}
	for _, a := range rec.Attempts {
		d.Attempts = append(d.Attempts, attemptDetail(run, rec, a))
	}
	d.Decision = Decided{Outcome: o.Outcome, Reason: o.Reason, Cause: string(o.Cause), DecidedAt: o.DecidedAt,
		DecidedBy: o.DecidedBy, Stuck: o.Stuck, Evidence: evidenceOf(run, rec, o, sum, d.Attempts)}
	if rec.Task.Array.Enabled() {
		for i := range rec.Task.Array.Size() {
			d.Elements = append(d.Elements, schema.ElementRunID(rec.RunID, i))
		}
	}
	d.Logs.Commands = []string{"tether logs " + rec.RunID, "tether logs " + rec.RunID + " --stderr"}
	if n := len(d.Attempts); n > 0 {
		d.Logs.Stdout, d.Logs.Stderr = d.Attempts[n-1].Stdout, d.Attempts[n-1].Stderr
		if n > 1 {
			d.Logs.Commands = append(d.Logs.Commands, fmt.Sprintf("tether logs %s --attempt N (1..%d)", rec.RunID, n))
		}
	}
	if rec.Task.Array.Enabled() {
		d.Logs.Commands = []string{"tether logs " + rec.RunID + " --element N", "tether show " + rec.RunID + ".N"}
	}
	return d
}

func specOf(rec *schema.RunRecord) Spec {
	t, r := &rec.Task, rec.Task.Resources
	s := Spec{Name: t.Name, Command: t.Command, Workdir: t.Workdir, Nodes: r.Nodes, NTasks: r.NTasks,
		PerNode: r.NTasksPerNode, CPUs: r.CPUsPerTask, GPUs: r.GPUsPerTask, Launcher: t.MPI.Launcher,
		Retries: t.Retry.MaxAttempts}
	if t.Script != "" {
		first, _, _ := strings.Cut(strings.TrimSpace(t.Script), "\n")
		s.Script = first
	}
	if m := r.Memory.MiB(); m > 0 {
		s.Memory = units.HumanMemory(m)
	}
	if w := r.Walltime.D(); w > 0 {
		s.Walltime = w.String()
	}
	if p := t.Proceed; p.OnTimeout != "" {
		s.Proceed = "on timeout: " + p.OnTimeout
		if p.OnTimeout == schema.PolicyCheckpoint {
			s.Proceed += fmt.Sprintf(" (at least %s", pct(p.MinFraction))
			if len(p.RequireOutputs) > 0 {
				s.Proceed += "; outputs " + strings.Join(p.RequireOutputs, ", ")
			}
			s.Proceed += ")"
		}
		if p.OnFailure != "" {
			s.Proceed += "; on failure: " + p.OnFailure
		}
	}
	if t.Array.Enabled() {
		s.ArraySize = t.Array.Size()
	}
	if el := rec.Element; el != nil {
		s.Array, s.Index = el.Array, &el.Index
	}
	return s
}

func attemptDetail(run rundir.Run, rec *schema.RunRecord, a schema.Attempt) AttemptDetail {
	ad := AttemptDetail{N: a.N, JobID: a.JobID, Reason: a.Reason, Generation: a.Generation, SubmittedAt: a.SubmittedAt,
		EndedAt: a.EndedAt, State: a.State, Nodes: a.Nodes, ExitCode: a.ExitCode, Decision: a.Decision,
		Cause: string(a.Cause), Exclude: append(append([]string(nil), a.Exclude...), a.ExcludeBad...),
		ResumeFrom: a.ResumeFrom, Usage: a.Usage, Stdout: run.Stdout(a.N), Stderr: run.Stderr(a.N)}
	if a.MemoryMiB > 0 {
		ad.Memory = units.HumanMemory(a.MemoryMiB)
	} else if m := rec.Task.Resources.Memory.MiB(); m > 0 {
		ad.Memory = units.HumanMemory(m)
	}
	if s, ok, _ := run.StartedFile(a.N); ok {
		t := s.Time
		ad.StartedAt, ad.Host = &t, s.Host
	}
	if x, ok, _ := run.ExitFile(a.N); ok {
		if ad.ExitCode == nil {
			c := x.ExitCode
			ad.ExitCode = &c
		}
		ad.Signal = x.Signal
		if ad.EndedAt == nil {
			t := x.Time
			ad.EndedAt = &t
		}
	}
	return ad
}

// readCheckpoints reads the status file's summary and its latest
// checkpoints (every generation's, each with its attempt).
func readCheckpoints(path string) (rundir.Summary, []CheckpointView) {
	sr := rundir.StatusReader{Path: path}
	sr.Update()
	f, err := os.Open(path)
	if err != nil {
		return sr.Summary, nil
	}
	defer f.Close()
	var out []CheckpointView
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), rundir.MaxLine)
	for sc.Scan() {
		line := sc.Bytes()
		if !strings.Contains(string(line), `"checkpoint"`) {
			continue
		}
		var ev schema.Event
		if json.Unmarshal(line, &ev) != nil || ev.Type != "checkpoint" {
			continue
		}
		msg, _ := cut(ev.Message, 200)
		out = append(out, CheckpointView{At: ev.TS, Attempt: ev.Attempt, Fraction: ev.Fraction, Paths: ev.Paths, Resume: ev.Resume, Message: msg})
		if len(out) > 2*maxCheckpoints {
			out = append(out[:0], out[len(out)-maxCheckpoints:]...)
		}
	}
	if len(out) > maxCheckpoints {
		out = out[len(out)-maxCheckpoints:]
	}
	return sr.Summary, out
}

func cut(s string, n int) (string, bool) {
	if len(s) <= n {
		return s, false
	}
	return s[:n] + "…", true
}

// evidenceOf lists what the decision (or the live state) rests on.
func evidenceOf(run rundir.Run, rec *schema.RunRecord, o schema.Outcome, sum rundir.Summary, atts []AttemptDetail) []string {
	ev := []string{}
	if len(atts) > 0 {
		a := atts[len(atts)-1]
		x, ok, _ := run.ExitFile(a.N)
		switch {
		case ok && x.Error != "":
			ev = append(ev, fmt.Sprintf("exit file of attempt %d: the wrapper failed before the Task started: %s", a.N, x.Error))
		case ok && x.Requeued:
			ev = append(ev, fmt.Sprintf("exit file of attempt %d: the scheduler requeued the job; the wrapper ran nothing", a.N))
		case ok:
			s := fmt.Sprintf("exit file of attempt %d: exit %d at %s", a.N, x.ExitCode, x.Time.UTC().Format(time.RFC3339))
			if x.Signal != 0 {
				s += fmt.Sprintf(", signal %d", x.Signal)
			}
			if x.Warned {
				s += ", after the warn signal"
			}
			if x.Provisional {
				s += " (provisional: written when SIGTERM arrived)"
			}
			ev = append(ev, s)
		case a.StartedAt != nil:
			ev = append(ev, fmt.Sprintf("attempt %d: the wrapper started on %s at %s and has written no exit file", a.N, a.Host, a.StartedAt.UTC().Format(time.RFC3339)))
		default:
			ev = append(ev, fmt.Sprintf("attempt %d: the wrapper has not started", a.N))
		}
		if a.State != "" {
			ev = append(ev, fmt.Sprintf("scheduler: job %s of attempt %d ended %s", a.JobID, a.N, a.State))
		} else if o.SchedulerState != "" {
			ev = append(ev, fmt.Sprintf("scheduler: job %s is %s", o.JobID, o.SchedulerState))
		}
	}
	if cp := sum.Checkpoint; cp != nil {
		s := "status file: latest checkpoint"
		if cp.Fraction != nil {
			s += " at " + pct(*cp.Fraction)
		}
		s += " (" + cp.TS.UTC().Format(time.RFC3339) + ")"
		for _, p := range cp.Paths {
			path := p
			if !filepath.IsAbs(path) {
				path = filepath.Join(rec.Task.Workdir, p)
			}
			if _, err := os.Stat(path); err == nil {
				s += "; " + p + " exists"
			} else {
				s += "; " + p + " is missing"
			}
		}
		ev = append(ev, s)
	} else if rec.Task.Proceed.OnTimeout == schema.PolicyCheckpoint && !rec.Task.Array.Enabled() {
		ev = append(ev, "status file: no checkpoint")
	}
	if !sum.LastHeartbeat.IsZero() {
		ev = append(ev, "status file: last heartbeat "+sum.LastHeartbeat.UTC().Format(time.RFC3339))
	}
	if rec.CancelRequested != nil {
		ev = append(ev, "run record: cancel requested at "+rec.CancelRequested.UTC().Format(time.RFC3339))
	}
	if o.Size > 0 {
		words := make([]string, 0, len(o.Counts))
		for w := range o.Counts {
			words = append(words, w)
		}
		sort.Strings(words)
		parts := make([]string, len(words))
		for i, w := range words {
			parts[i] = fmt.Sprintf("%d %s", o.Counts[w], w)
		}
		ev = append(ev, fmt.Sprintf("elements' outcomes: %s, of %d", strings.Join(parts, ", "), o.Size))
	}
	return ev
}
