package slurmrest

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/tether-hpc/tether/backends"
	gen "github.com/tether-hpc/tether/backends/slurmrest/internal/v0042"
)

// v0042 adapts the generated v0.0.42 client.
type v0042 struct {
	c *gen.ClientWithResponses
	t *transport
}

func newV0042(base string, doer gen.HttpRequestDoer, t *transport) (api, error) {
	c, err := gen.NewClientWithResponses(base, gen.WithHTTPClient(doer))
	if err != nil {
		return nil, err
	}
	return api4x{v: v0042{c: c, t: t}}, nil
}

func (v v0042) jobsState(ctx context.Context, ids []string) ([]stateItem, error) {
	r, err := v.c.SlurmV0042GetJobsStateWithResponse(ctx, &gen.SlurmV0042GetJobsStateParams{JobId: &ids})
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

func (v v0042) getJob(ctx context.Context, id string) (job, bool, error) {
	r, err := v.c.SlurmV0042GetJobWithResponse(ctx, id, nil)
	if err != nil {
		return job{}, false, err
	}
	if unknownJob(r.StatusCode(), r.Body) {
		return job{}, false, nil
	}
	if r.StatusCode() != http.StatusOK || r.JSON200 == nil || len(r.JSON200.Jobs) == 0 {
		return job{}, false, v.t.answerError("read job "+id, r.StatusCode(), r.Body, false)
	}
	return jobV0042(r.JSON200.Jobs[0]), true, nil
}

func (v v0042) listJobs(ctx context.Context, window time.Duration) ([]job, error) {
	var p *gen.SlurmV0042GetJobsParams
	if window > 0 {
		p = &gen.SlurmV0042GetJobsParams{UpdateTime: strPtr(updateSince(window))}
	}
	r, err := v.c.SlurmV0042GetJobsWithResponse(ctx, p)
	if err != nil {
		return nil, err
	}
	if r.StatusCode() != http.StatusOK || r.JSON200 == nil {
		return nil, v.t.answerError("list jobs", r.StatusCode(), r.Body, false)
	}
	out := make([]job, 0, len(r.JSON200.Jobs))
	for _, g := range r.JSON200.Jobs {
		out = append(out, jobV0042(g))
	}
	return out, nil
}

func (v v0042) submitDesc(ctx context.Context, d desc) (backends.JobID, error) {
	r := d.req
	m := gen.V0042JobDescMsg{
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
	tl := gen.V0042Uint32NoValStruct(setNoVal(d.minutes()))
	m.TimeLimit = &tl
	if r.Nodes > 0 {
		m.Nodes = strPtr(strconv.Itoa(r.Nodes))
	}
	if r.MemoryMiB > 0 {
		mem := gen.V0042Uint64NoValStruct(setNoVal(r.MemoryMiB))
		m.MemoryPerNode = &mem
	}
	if r.GPUsPerTask > 0 {
		m.TresPerTask = strPtr("gres/gpu:" + strconv.Itoa(r.GPUsPerTask))
	}
	if len(r.Exclude) > 0 {
		ex := gen.V0042CsvString(r.Exclude)
		m.ExcludedNodes = &ex
	}
	if r.WarnSignal != "" && r.WarnBefore > 0 {
		delay := gen.V0042Uint16NoValStruct(setNoVal(d.warnSeconds()))
		m.KillWarningSignal, m.KillWarningDelay = strPtr("SIG"+r.WarnSignal), &delay
		m.KillWarningFlags = &gen.V0042WarnFlags{"BATCH_JOB"}
	}
	if d.hold {
		m.Hold = ptr(true)
	}
	if d.exclusive {
		m.Shared = &gen.V0042JobShared{"none"}
	}
	resp, err := v.c.SlurmV0042PostJobSubmitWithResponse(ctx, gen.V0042JobSubmitReq{Job: &m})
	if err != nil {
		return "", err
	}
	if resp.StatusCode() != http.StatusOK || resp.JSON200 == nil || resp.JSON200.JobId == nil {
		return "", v.t.answerError("submit", resp.StatusCode(), resp.Body, true)
	}
	return backends.JobID(strconv.FormatInt(*resp.JSON200.JobId, 10)), nil
}

func (v v0042) cancelJob(ctx context.Context, id string) error {
	r, err := v.c.SlurmV0042DeleteJobWithResponse(ctx, id, nil)
	if err != nil {
		return err
	}
	if r.StatusCode() != http.StatusOK || r.JSON200 == nil {
		return cancelAnswer(v.t, id, r.StatusCode(), r.Body)
	}
	// 200 can still carry a failure per job: 2017 unknown, 2021 finished
	for _, s := range r.JSON200.Status {
		if s.Error != nil && s.Error.Code != nil {
			if err := cancelStatus(v.t, id, *s.Error.Code, deref(s.Error.String)); err != nil {
				return err
			}
		}
	}
	return nil
}

func (v v0042) pingOnce(ctx context.Context) error {
	r, err := v.c.SlurmV0042GetPingWithResponse(ctx)
	if err != nil {
		return err
	}
	if r.StatusCode() != http.StatusOK {
		return v.t.answerError("ping", r.StatusCode(), r.Body, false)
	}
	if r.JSON200 != nil {
		for _, p := range r.JSON200.Pings {
			if !p.Responding {
				return notResponding(v.t)
			}
		}
	}
	return nil
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// notResponding is a ping whose controller does not answer; slurmrestd
// 24.11 answers a refused token on /ping the same way.
func notResponding(t *transport) error {
	return fmt.Errorf("%w: slurmrestd at %s reports slurmctld not responding (or it refused the token from %s)", backends.ErrUnavailable, t.display, tokenWhere(t))
}

func tokenWhere(t *transport) string {
	if t.token == nil {
		return "local auth"
	}
	return t.token.Describe()
}

// escapePattern keeps a path literal for Slurm's filename patterns.
func escapePattern(p string) string { return strings.ReplaceAll(p, "%", "%%") }

// jobV0042 reads a job record.
func jobV0042(g gen.V0042JobInfo) job {
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

func (v v0042) nodeInfo(ctx context.Context, name string) ([]string, string, error) {
	r, err := v.c.SlurmV0042GetNodeWithResponse(ctx, name, nil)
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
