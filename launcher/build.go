package launcher

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/tether-hpc/tether/backends"
	"github.com/tether-hpc/tether/rundir"
	"github.com/tether-hpc/tether/schema"
)

// Plan is one attempt, ready to submit.
type Plan struct {
	Script     []byte // job.sh
	TaskScript []byte // task.sh, for tasks given as a script
	Request    backends.JobRequest
	// Launch is the command line the wrapper runs, for display.
	Launch []string
}

// AttemptSpec says which attempt to build.
type AttemptSpec struct {
	N          int
	ResumeFrom string
	Exclude    []string
	// MemoryMiB overrides the Task's memory (a retry after an
	// out-of-memory end asks for more); 0: the Task's.
	MemoryMiB int64
	// WarnTimer makes the wrapper send the warn signal itself, for backends
	// that cannot deliver it to the batch script.
	WarnTimer bool
	// Env is what the job gets of the submitter's environment (the run
	// record's Env).
	Env map[string]string
	// Element makes the attempt one element of an array (its index and
	// parameters reach the Task: schema.ElementEnv).
	Element *schema.Element
}

// Build makes the wrapper and the job request of one attempt. tetherPath is
// the tether binary the Task finds on its PATH (the site's tether_path, else
// the submitting binary).
func Build(run rundir.Run, task *schema.Task, site *schema.Site, a AttemptSpec, tetherPath string) (*Plan, error) {
	command := task.Command
	var taskScript []byte
	if task.Script != "" {
		path := run.TaskScript(a.N)
		body := task.Script
		if strings.HasPrefix(body, "#!") {
			command = []string{path}
		} else {
			body = "#!/bin/bash\n" + body
			command = []string{"/bin/bash", path}
		}
		if !strings.HasSuffix(body, "\n") {
			body += "\n"
		}
		taskScript = []byte(body)
	}
	if site.TetherPath != "" {
		tetherPath = site.TetherPath
	}
	elemEnv := schema.ElementEnv(a.Element)
	launch, err := launchWords(task, site, command, append(exported(task, site, a.ResumeFrom != "", tetherPath != ""), sortedKeys(elemEnv)...))
	if err != nil {
		return nil, err
	}
	script := renderWrapper(wrapperInput{
		run: run, attempt: a.N, task: task, site: site, launch: launch,
		resumeFrom: a.ResumeFrom, tetherPath: tetherPath, elemEnv: elemEnv,
	})
	r := task.Resources
	s := task.Scheduler
	extra := append(append([]string{}, siteExtraArgs(site)...), s.ExtraArgs...)
	req := backends.JobRequest{
		Name:          task.Name,
		RunID:         run.ID,
		Attempt:       a.N,
		Script:        run.Script(a.N),
		Dir:           run.AttemptDir(a.N),
		Stdout:        run.Stdout(a.N),
		Stderr:        run.Stderr(a.N),
		Nodes:         r.Nodes,
		NTasks:        r.TotalTasks(),
		NTasksPerNode: r.NTasksPerNode,
		CPUsPerTask:   r.CPUsPerTask,
		GPUsPerTask:   r.GPUsPerTask,
		MemoryMiB:     r.Memory.MiB(),
		Walltime:      r.Walltime.D(),
		WarnSignal:    warnIf(!a.WarnTimer, task.Signals.WarnSignalName()),
		WarnBefore:    task.Signals.WarnBefore.D(),
		Partition:     s.PartitionOrQueue(),
		Account:       s.Account,
		QoS:           s.QoS,
		Reservation:   s.Reservation,
		Constraint:    s.Constraint,
		Exclude:       a.Exclude,
		Requeue:       site.Retry.Requeue,
		ExtraArgs:     extra,
		Tag:           Tag(run.ID, a.N),
		Env:           a.Env,
	}
	if a.MemoryMiB > 0 {
		req.MemoryMiB = a.MemoryMiB
	}
	disp := make([]string, len(launch))
	for i, w := range launch {
		disp[i] = w.String()
	}
	return &Plan{Script: []byte(script), TaskScript: taskScript, Request: req, Launch: disp}, nil
}

func warnIf(ok bool, sig string) string {
	if ok {
		return sig
	}
	return ""
}

func siteExtraArgs(site *schema.Site) []string {
	switch site.Backend {
	case schema.BackendSbatch:
		return site.Sbatch.ExtraArgs
	case schema.BackendPBS:
		return site.PBS.ExtraArgs
	}
	return nil
}

// Tag is the marker a job carries so it can be found by run and attempt.
func Tag(runID string, attempt int) string { return fmt.Sprintf("tether:%s:%d", runID, attempt) }

// SpecHash fingerprints what a run executes; the same idempotency key with
// a different hash is an error.
func SpecHash(task *schema.Task, site *schema.Site) string {
	t := *task
	t.File = ""
	// an array's elements are its identity, not the params file's path
	// (Airflow writes them to a temporary file on whichever worker runs)
	t.Array.Params = ""
	b, _ := json.Marshal(struct {
		Task schema.Task `json:"task"`
		Site string      `json:"site"`
	}{t, site.Name})
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// Abs returns an absolute path or the path unchanged.
func abs(p string) string {
	if a, err := filepath.Abs(p); err == nil {
		return a
	}
	return p
}
