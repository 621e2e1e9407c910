package slurmrest

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/tether-hpc/tether/backends"
	gen "github.com/tether-hpc/tether/backends/slurmrest/internal/v0040"
)

// v0040 adapts the generated v0.0.42 client.
type v0040 struct {
	c *gen.ClientWithResponses
	t *transport
}

func newV0040(base string, doer gen.HttpRequestDoer, t *transport) (api, error) {
	c, err := gen.NewClientWithResponses(base, gen.WithHTTPClient(doer))
	if err != nil {
		return nil, err
	}
	return api4x{v: v0040{c: c, t: t}}, nil
}

func (v v0040) jobsState(ctx context.Context, ids []string) ([]stateItem, error) {
	r, err := v.c.SlurmV0040GetJobsStateWithResponse(ctx, &gen.SlurmV0040GetJobsStateParams{JobId: &ids})
	if err != nil {
		return nil, err
	}
	if r.StatusCode() != http.StatusOK || r.JSON200 == nil {
		return nil, v.t.answerError("read job states", r.StatusCode(), r.Body, false)
	}
	var out []stateItem
	if r.JSON200.Jobs != nil {
		for _, it := range *r.JSON200.Jobs {
			if it.JobId != nil && it.State != nil {
				out = append(out, stateItem{ID: *it.JobId, States: *it.State})
			}
		}
	}
	return out, nil
}

func (v v0040) getJob(ctx context.Context, id string) (job, bool, error) {
	r, err := v.c.SlurmV0040GetJobWithResponse(ctx, id, nil)
	if err != nil {
		return job{}, false, err
	}
	if unknownJob(r.StatusCode(), r.Body) {
		return job{}, false, nil
	}
	if r.StatusCode() != http.StatusOK || r.JSON200 == nil || len(r.JSON200.Jobs) == 0 {
		return job{}, false, v.t.answerError("read job "+id, r.StatusCode(), r.Body, false)
	}
	return jobV0040(r.JSON200.Jobs[0]), true, nil
}

func (v v0040) listJobs(ctx context.Context, window time.Duration) ([]job, error) {
	var p *gen.SlurmV0040GetJobsParams
	if window > 0 {
		p = &gen.SlurmV0040GetJobsParams{UpdateTime: strPtr(updateSince(window))}
	}
	r, err := v.c.SlurmV0040GetJobsWithResponse(ctx, p)
	if err != nil {
		return nil, err
	}
	if r.StatusCode() != http.StatusOK || r.JSON200 == nil {
		return nil, v.t.answerError("list jobs", r.StatusCode(), r.Body, false)
	}
	out := make([]job, 0, len(r.JSON200.Jobs))
	for _, g := range r.JSON200.Jobs {
		out = append(out, jobV0040(g))
	}
	return out, nil
}

func (v v0040) submitDesc(ctx context.Context, d desc) (backends.JobID, error) {
	r := d.req
	m := gen.V0040JobDescMsg{
		Script:                  &d.script,
		Environment:             &d.env,
		CurrentWorkingDirectory: &r.Dir,
		StandardOutput:          strPtr(escapePattern(r.Stdout)),
		StandardError:           strPtr(escapePattern(r.Stderr)),
		Name:                    strPtr(r.Name),
		Comment:                 strPtr(r.Tag),
		Requeue:                 ptr(r.Requeue),
		Tasks:                   intPtr(r.NTasks),
		TasksPerNode:            intPtr(r.NTasksPerNode),
		CpusPerTask:             intPtr(r.CPUsPerTask),
		Partition:               strPtr(r.Partition),
		Account:                 strPtr(r.Account),
		Qos:                     strPtr(r.QoS),
		Reservation:             strPtr(r.Reservation),
		Constraints:             strPtr(r.Constraint),
	}
	tl := gen.V0040Uint32NoVal(setNoVal(d.minutes()))
	m.TimeLimit = &tl
	if r.Nodes > 0 {
		m.Nodes = strPtr(strconv.Itoa(r.Nodes))
	}
	if r.MemoryMiB > 0 {
		mem := gen.V0040Uint64NoVal(setNoVal(r.MemoryMiB))
		m.MemoryPerNode = &mem
	}
	if r.GPUsPerTask > 0 {
		m.TresPerTask = strPtr("gres/gpu:" + strconv.Itoa(r.GPUsPerTask))
	}
	if len(r.Exclude) > 0 {
		ex := gen.V0040CsvString(r.Exclude)
		m.ExcludedNodes = &ex
	}
	if r.WarnSignal != "" && r.WarnBefore > 0 {
		delay := gen.V0040Uint16NoVal(setNoVal(d.warnSeconds()))
		m.KillWarningSignal, m.KillWarningDelay = strPtr("SIG"+r.WarnSignal), &delay
		m.KillWarningFlags = &gen.V0040WarnFlags{"BATCH_JOB"}
	}
	if d.hold {
		m.Hold = ptr(true)
	}
	if d.exclusive {
		m.Shared = &gen.V0040JobShared{"none"}
	}
	resp, err := v.c.SlurmV0040PostJobSubmitWithResponse(ctx, gen.V0040JobSubmitReq{Job: &m})
	if err != nil {
		return "", err
	}
	if resp.StatusCode() != http.StatusOK || resp.JSON200 == nil || resp.JSON200.JobId == nil {
		return "", v.t.answerError("submit", resp.StatusCode(), resp.Body, true)
	}
	return backends.JobID(strconv.FormatInt(*resp.JSON200.JobId, 10)), nil
}

func (v v0040) cancelJob(ctx context.Context, id string) error {
	r, err := v.c.SlurmV0040DeleteJobWithResponse(ctx, id, nil)
	if err != nil {
		return err
	}
	// v0.0.40 answers 200 even for an unknown job: nothing more to learn
	return cancelAnswer(v.t, id, r.StatusCode(), r.Body)
}

func (v v0040) pingOnce(ctx context.Context) error {
	r, err := v.c.SlurmV0040GetPingWithResponse(ctx)
	if err != nil {
		return err
	}
	if r.StatusCode() != http.StatusOK {
		return v.t.answerError("ping", r.StatusCode(), r.Body, false)
	}
	if r.JSON200 != nil {
		for _, p := range r.JSON200.Pings {
			if p.Pinged != nil && *p.Pinged != "UP" {
				return notResponding(v.t)
			}
		}
	}
	return nil
}

// jobV0040 reads a job record.
func jobV0040(g gen.V0040JobInfo) job {
	j := job{}
	if g.JobId != nil {
		j.ID = *g.JobId
	}
	if g.Comment != nil {
		j.Comment = *g.Comment
	}
	if g.JobState != nil {
		j.States = *g.JobState
	}
	j.Reason, j.Nodes = deref(g.StateReason), deref(g.Nodes)
	j.Submit, _ = nv(g.SubmitTime).value()
	j.Start, _ = nv(g.StartTime).value()
	j.End, _ = nv(g.EndTime).value()
	j.LimitMin, _ = nv(g.TimeLimit).value()
	if e := g.ExitCode; e != nil {
		if rc, ok := nv(e.ReturnCode).value(); ok {
			j.ExitSet, j.ExitCode = true, int(rc)
		}
		if e.Signal != nil && e.Signal.Id != nil {
			if n, ok := nv(e.Signal.Id).value(); ok {
				j.Signal = int(n)
			}
		}
	}
	return j
}

func (v v0040) nodeInfo(ctx context.Context, name string) ([]string, string, error) {
	r, err := v.c.SlurmV0040GetNodeWithResponse(ctx, name, nil)
	if err != nil {
		return nil, "", err
	}
	if r.StatusCode() != http.StatusOK || r.JSON200 == nil || len(r.JSON200.Nodes) == 0 {
		return nil, "", v.t.answerError("read node "+name, r.StatusCode(), r.Body, false)
	}
	n := r.JSON200.Nodes[0]
	var states []string
	if n.State != nil {
		states = *n.State
	}
	return states, deref(n.Reason), nil
}
