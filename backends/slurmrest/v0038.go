package slurmrest

import (
	"context"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tether-hpc/tether/backends"
	"github.com/tether-hpc/tether/backends/internal/slurm"
	gen "github.com/tether-hpc/tether/backends/slurmrest/internal/v0038"
)

// v0038 adapts the generated v0.0.38 client (Slurm 22.05). This version
// has no jobs/state endpoint: a poll is one GET /jobs for all jobs,
// filtered here.
type v0038 struct {
	c *gen.ClientWithResponses
	t *transport
}

func newV0038(base string, doer gen.HttpRequestDoer, t *transport) (api, error) {
	c, err := gen.NewClientWithResponses(base, gen.WithHTTPClient(doer))
	if err != nil {
		return nil, err
	}
	return v0038{c: c, t: t}, nil
}

func (v v0038) query(ctx context.Context, ids []backends.JobID) (map[backends.JobID]backends.JobStatus, error) {
	out := map[backends.JobID]backends.JobStatus{}
	if len(ids) == 0 {
		return out, v.ping(ctx)
	}
	want := map[backends.JobID]bool{}
	for _, id := range ids {
		want[id] = true
	}
	all, err := v.jobs(ctx)
	if err != nil {
		return nil, err
	}
	for _, j := range all {
		for _, st := range j.statuses() {
			if want[st.ID] {
				out[st.ID] = st
			}
		}
	}
	return out, nil
}

// jobs reads the job list (v0.0.38 has no per-id query: the list is the
// one request of a poll).
func (v v0038) jobs(ctx context.Context) ([]job, error) {
	r, err := v.c.SlurmV0038GetJobsWithResponse(ctx, nil)
	if err != nil {
		return nil, err
	}
	if r.StatusCode() != http.StatusOK || r.JSON200 == nil {
		return nil, v.t.answerError("list jobs", r.StatusCode(), r.Body, false)
	}
	if r.JSON200.Jobs == nil {
		return nil, nil
	}
	out := make([]job, 0, len(*r.JSON200.Jobs))
	for _, g := range *r.JSON200.Jobs {
		if g.JobId != nil {
			out = append(out, jobV0038(g))
		}
	}
	return out, nil
}

// jobV0038 reads a v0.0.38 job record. exit_code is the raw wait status
// (exit 3 arrives as 768); 4294967295 (NO_VAL) means none.
func jobV0038(g gen.V0038JobResponseProperties) job {
	j := job{ID: int64(*g.JobId), Reason: deref(g.StateReason), Nodes: deref(g.Nodes), Comment: deref(g.Comment)}
	if g.JobState != nil {
		j.States = []string{*g.JobState}
		// a job Slurm requeued itself (22.05's REST API ignores
		// requeue=false) waits as PENDING with a restart count
		if *g.JobState == "PENDING" && g.RestartCnt != nil && *g.RestartCnt > 0 {
			j.States = []string{"REQUEUED"}
		}
	}
	if g.SubmitTime != nil {
		j.Submit = *g.SubmitTime
	}
	if g.StartTime != nil {
		j.Start = *g.StartTime
	}
	if g.EndTime != nil {
		j.End = *g.EndTime
	}
	if g.TimeLimit != nil {
		j.LimitMin = *g.TimeLimit
	}
	if g.ArrayJobId != nil {
		j.ArrayJobID = int64(*g.ArrayJobId)
	}
	if g.ArrayTaskId != nil && j.ArrayJobID > 0 && (g.ArrayTaskString == nil || *g.ArrayTaskString == "") {
		j.ArrayTaskID, j.ArrayTaskSet = int64(*g.ArrayTaskId), true
	}
	j.ArrayTasks = deref(g.ArrayTaskString)
	if g.ExitCode != nil && *g.ExitCode >= 0 && *g.ExitCode < 1<<16 {
		code, sig := slurm.WaitStatus(*g.ExitCode)
		j.Signal = sig
		if sig == 0 {
			j.ExitSet, j.ExitCode = true, code
		}
	}
	return j
}

func (v v0038) submit(ctx context.Context, req backends.JobRequest, script string, env []string) (backends.JobID, error) {
	d, err := newDesc(req, script, env)
	if err != nil {
		return "", err
	}
	envMap := map[string]string{}
	for _, kv := range d.env {
		if k, val, ok := strings.Cut(kv, "="); ok {
			envMap[k] = val
		}
	}
	minutes := int(d.minutes())
	p := gen.V0038JobProperties{
		Environment:             envMap,
		CurrentWorkingDirectory: &req.Dir,
		StandardOutput:          strPtr(backends.SlurmPath(req.Stdout)),
		StandardError:           strPtr(backends.SlurmPath(req.Stderr)),
		Name:                    strPtr(req.Name),
		Comment:                 strPtr(req.Tag),
		Requeue:                 ptr(req.Requeue),
		TimeLimit:               &minutes,
		Partition:               strPtr(req.Partition),
		Account:                 strPtr(req.Account),
		Qos:                     strPtr(req.QoS),
		Reservation:             strPtr(req.Reservation),
		Constraints:             strPtr(req.Constraint),
	}
	setInt := func(dst **int, n int) {
		if n > 0 {
			*dst = &n
		}
	}
	setInt(&p.Tasks, req.NTasks)
	setInt(&p.TasksPerNode, req.NTasksPerNode)
	setInt(&p.CpusPerTask, req.CPUsPerTask)
	if req.MemoryMiB > 0 {
		m := int(req.MemoryMiB)
		p.MemoryPerNode = &m
	}
	if req.Nodes > 0 {
		p.Nodes = strPtr(strconv.Itoa(req.Nodes)) // the [min, max] form is ignored by 22.05
	}
	if req.GPUsPerTask > 0 {
		p.GpusPerTask = strPtr(strconv.Itoa(req.GPUsPerTask))
	}
	// No excluded nodes: the v0.0.38 job description has no field for
	// them; Backend.Submit drops them with a warning (canExclude).
	// No warn signal here: 22.05 rejects the "B:" form that reaches the
	// batch script, so the wrapper warns itself (DeliversWarnSignal).
	if d.hold {
		p.Hold = ptr(true)
	}
	if d.exclusive {
		p.Exclusive = ptr(gen.V0038JobPropertiesExclusive("true"))
	}
	p.Dependency = strPtr(d.depend)
	if req.Array != nil {
		p.Array = strPtr(req.Array.SlurmExpr())
	}
	if !d.begin.IsZero() {
		// 22.05 parses it with parse_time(): a local time, not a number
		p.BeginTime = ptr(d.begin.Local().Format("2006-01-02T15:04:05"))
	}
	r, err := v.c.SlurmV0038SubmitJobWithResponse(ctx, gen.V0038JobSubmission{Script: d.script, Job: &p})
	if err != nil {
		return "", err
	}
	if r.StatusCode() != http.StatusOK || r.JSON200 == nil || r.JSON200.JobId == nil {
		return "", v.t.answerError("submit", r.StatusCode(), r.Body, true)
	}
	return backends.JobID(strconv.Itoa(*r.JSON200.JobId)), nil
}

func (v v0038) cancel(ctx context.Context, id backends.JobID) error {
	r, err := v.c.SlurmV0038CancelJobWithResponse(ctx, string(id), nil)
	if err != nil {
		return err
	}
	// 22.05 answers 500 with error 2017 for an unknown job, 2021 for one
	// already finished: nothing to cancel
	return cancelAnswer(v.t, string(id), r.StatusCode(), r.Body)
}

func (v v0038) ping(ctx context.Context) error {
	r, err := v.c.SlurmV0038PingWithResponse(ctx)
	if err != nil {
		return err
	}
	if r.StatusCode() != http.StatusOK {
		return v.t.answerError("ping", r.StatusCode(), r.Body, false)
	}
	if r.JSON200 != nil && r.JSON200.Pings != nil {
		for _, p := range *r.JSON200.Pings {
			if p.Ping != nil && *p.Ping != "UP" {
				return notResponding(v.t)
			}
		}
	}
	return nil
}

func (v v0038) node(ctx context.Context, name string) ([]string, string, error) {
	r, err := v.c.SlurmV0038GetNodeWithResponse(ctx, name)
	if err != nil {
		return nil, "", err
	}
	if r.StatusCode() != http.StatusOK || r.JSON200 == nil || r.JSON200.Nodes == nil || len(*r.JSON200.Nodes) == 0 {
		return nil, "", v.t.answerError("read node "+name, r.StatusCode(), r.Body, false)
	}
	n := (*r.JSON200.Nodes)[0]
	return []string{deref(n.State)}, deref(n.Reason), nil
}

func (v v0038) partitions(ctx context.Context) ([]backends.Partition, error) {
	r, err := v.c.SlurmV0038GetPartitionsWithResponse(ctx, nil)
	if err != nil {
		return nil, err
	}
	if r.StatusCode() != http.StatusOK || r.JSON200 == nil || r.JSON200.Partitions == nil {
		return nil, v.t.answerError("read partitions", r.StatusCode(), r.Body, false)
	}
	var out []backends.Partition
	for _, g := range *r.JSON200.Partitions {
		p := backends.Partition{
			Name:             deref(g.Name),
			Default:          g.Flags != nil && slices.Contains(*g.Flags, "default"),
			MaxTime:          time.Duration(limit38(g.MaxTimeLimit)) * time.Minute,
			MaxNodes:         int(limit38(intPtr64(g.MaximumNodesPerJob))),
			TotalNodes:       int(limit38(intPtr64(g.TotalNodes))),
			TotalCPUs:        int(limit38(intPtr64(g.TotalCpus))),
			MaxCPUsPerNode:   int(limit38(intPtr64(g.MaximumCpusPerNode))),
			MaxMemPerNodeMiB: limit38(g.MaximumMemoryPerNode),
		}
		p.Up, p.Inactive = partitionState([]string{deref(g.State)})
		out = append(out, p)
	}
	return out, nil
}

// limit38 reads a v0.0.38 limit: null, -1 (UNLIMITED) and Slurm's
// INFINITE/NO_VAL (0xffffffff, 0xfffffffe) are no limit (0).
func limit38(n *int64) int64 {
	if n == nil || *n < 0 || *n >= 0xfffffffe {
		return 0
	}
	return *n
}

func intPtr64(n *int) *int64 {
	if n == nil {
		return nil
	}
	v := int64(*n)
	return &v
}
