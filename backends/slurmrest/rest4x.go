package slurmrest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/tether-hpc/tether/backends"
)

// The REST API versions v0.0.40, v0.0.41 and v0.0.42 have one adapter,
// rest4x: one set of wire types below, one request builder, one reading
// of each answer. What differs between the versions is the generated
// client's calls (paths, parameter types), in a table of seven functions
// per version (endpoints, in v0040.go, v0041.go, v0042.go).
//
// Why not generics over the generated types: Go's type parameters cannot
// reach struct fields, so a generic adapter would still need a mapping
// function per version for every field, the duplication this removes.
// The versions agree on the JSON of every field tether uses (where one
// lacks a field, the others' answers simply omit it), so the wire types
// are the one place a field is written; TestWireTypesMatchEachVersion
// decodes every wire field strictly into each version's generated types,
// so a field one version's spec does not know fails the test.

// wireDesc is a job description (v0.0.4x_job_desc_msg).
type wireDesc struct {
	Script                  string   `json:"script"`
	Environment             []string `json:"environment"`
	CurrentWorkingDirectory string   `json:"current_working_directory"`
	StandardOutput          string   `json:"standard_output,omitempty"`
	StandardError           string   `json:"standard_error,omitempty"`
	Name                    string   `json:"name,omitempty"`
	Comment                 string   `json:"comment,omitempty"`
	Requeue                 *bool    `json:"requeue,omitempty"`
	Tasks                   *int64   `json:"tasks,omitempty"`
	TasksPerNode            *int64   `json:"tasks_per_node,omitempty"`
	CPUsPerTask             *int64   `json:"cpus_per_task,omitempty"`
	Partition               string   `json:"partition,omitempty"`
	Account                 string   `json:"account,omitempty"`
	QoS                     string   `json:"qos,omitempty"`
	Reservation             string   `json:"reservation,omitempty"`
	Constraints             string   `json:"constraints,omitempty"`
	TimeLimit               *noVal   `json:"time_limit,omitempty"` // minutes
	Nodes                   string   `json:"nodes,omitempty"`
	MemoryPerNode           *noVal   `json:"memory_per_node,omitempty"` // MiB
	TRESPerTask             string   `json:"tres_per_task,omitempty"`
	ExcludedNodes           []string `json:"excluded_nodes,omitempty"`
	KillWarningSignal       string   `json:"kill_warning_signal,omitempty"`
	KillWarningDelay        *noVal   `json:"kill_warning_delay,omitempty"` // seconds
	KillWarningFlags        []string `json:"kill_warning_flags,omitempty"`
	Hold                    *bool    `json:"hold,omitempty"`
	BeginTime               *noVal   `json:"begin_time,omitempty"` // unix seconds
	Dependency              string   `json:"dependency,omitempty"`
	Shared                  []string `json:"shared,omitempty"`
	Array                   string   `json:"array,omitempty"`
}

type wireSubmitReq struct {
	Job wireDesc `json:"job"`
}

type wireSubmitResp struct {
	JobID *int64 `json:"job_id,omitempty"`
}

// wireJob is a job record (v0.0.4x_job_info).
type wireJob struct {
	JobID       *int64   `json:"job_id,omitempty"`
	Comment     *string  `json:"comment,omitempty"`
	JobState    []string `json:"job_state,omitempty"` // base state first, then flags
	StateReason *string  `json:"state_reason,omitempty"`
	Nodes       *string  `json:"nodes,omitempty"`
	SubmitTime  *noVal   `json:"submit_time,omitempty"`
	StartTime   *noVal   `json:"start_time,omitempty"`
	EndTime     *noVal   `json:"end_time,omitempty"`
	TimeLimit   *noVal   `json:"time_limit,omitempty"`
	// an array element's array and index; a pending array's record
	// holds the indices not started ("2-199%50")
	ArrayJobID      *noVal  `json:"array_job_id,omitempty"`
	ArrayTaskID     *noVal  `json:"array_task_id,omitempty"`
	ArrayTaskString *string `json:"array_task_string,omitempty"`
	// TRESAlloc is what the job was given ("cpu=4,mem=2G,node=1,gres/gpu=1").
	TRESAlloc *string `json:"tres_alloc_str,omitempty"`
	ExitCode  *struct {
		ReturnCode *noVal `json:"return_code,omitempty"`
		Signal     *struct {
			ID *noVal `json:"id,omitempty"`
		} `json:"signal,omitempty"`
	} `json:"exit_code,omitempty"`
}

type wireJobs struct {
	Jobs []wireJob `json:"jobs"`
}

type wireStates struct {
	Jobs []struct {
		JobID *string  `json:"job_id,omitempty"`
		State []string `json:"state,omitempty"`
	} `json:"jobs"`
}

// wireCancel is a cancel's answer; status (per job) is v0.0.42's.
type wireCancel struct {
	Status []struct {
		Error *struct {
			Code   *int64  `json:"code,omitempty"`
			String *string `json:"string,omitempty"`
		} `json:"error,omitempty"`
	} `json:"status,omitempty"`
}

// wirePing is a ping's answer: pinged ("UP", "DOWN"); v0.0.42 also
// says responding.
type wirePing struct {
	Pings []struct {
		Pinged     *string `json:"pinged,omitempty"`
		Responding *bool   `json:"responding,omitempty"`
	} `json:"pings"`
}

type wireNodes struct {
	Nodes []struct {
		State  []string `json:"state,omitempty"`
		Reason *string  `json:"reason,omitempty"`
	} `json:"nodes"`
}

// wirePartitions is the partition list (v0.0.4x_openapi_partition_resp).
// It does not say which partition is the default.
type wirePartitions struct {
	Partitions []struct {
		Name  *string `json:"name,omitempty"`
		Nodes *struct {
			Total *int64 `json:"total,omitempty"`
		} `json:"nodes,omitempty"`
		CPUs *struct {
			Total *int64 `json:"total,omitempty"`
		} `json:"cpus,omitempty"`
		Maximums *struct {
			Time                   *noVal `json:"time,omitempty"` // minutes
			Nodes                  *noVal `json:"nodes,omitempty"`
			CPUsPerNode            *noVal `json:"cpus_per_node,omitempty"`
			PartitionMemoryPerNode *noVal `json:"partition_memory_per_node,omitempty"` // MiB; 0 none
		} `json:"maximums,omitempty"`
		Partition *struct {
			State []string `json:"state,omitempty"`
		} `json:"partition,omitempty"`
	} `json:"partitions"`
}

// endpoints are one version's generated calls; each returns the raw
// answer, which rest4x reads.
type endpoints struct {
	jobsState func(ctx context.Context, ids []string) (*http.Response, error)
	getJob    func(ctx context.Context, id string) (*http.Response, error)
	// listJobs lists the jobs updated since (Slurm's time form), or all
	// jobs for nil.
	listJobs func(ctx context.Context, since *string) (*http.Response, error)
	submit   func(ctx context.Context, body io.Reader) (*http.Response, error)
	cancel   func(ctx context.Context, id string) (*http.Response, error)
	ping     func(ctx context.Context) (*http.Response, error)
	node     func(ctx context.Context, name string) (*http.Response, error)
	// partitions lists every partition.
	partitions func(ctx context.Context) (*http.Response, error)
}

// rest4x implements v4x for v0.0.40–v0.0.42 over a version's endpoints.
type rest4x struct {
	e endpoints
	t *transport
}

// answer reads a call's answer.
func answer(resp *http.Response, err error) (int, []byte, error) {
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, nil, fmt.Errorf("%w: read slurmrestd's answer: %w", backends.ErrUnavailable, err)
	}
	return resp.StatusCode, body, nil
}

// decodeOK reads a 200 answer into out; any other answer is answerError.
func (v rest4x) decodeOK(what string, status int, body []byte, submit bool, out any) error {
	if status != http.StatusOK {
		return v.t.answerError(what, status, body, submit)
	}
	if err := json.Unmarshal(body, out); err != nil {
		return fmt.Errorf("%w: %s: slurmrestd's answer is not the JSON of its API: %w", backends.ErrUnavailable, what, err)
	}
	return nil
}

func (v rest4x) jobsState(ctx context.Context, ids []string) ([]stateItem, error) {
	status, body, err := answer(v.e.jobsState(ctx, ids))
	if err != nil {
		return nil, err
	}
	var r wireStates
	if err := v.decodeOK("read job states", status, body, false, &r); err != nil {
		return nil, err
	}
	var out []stateItem
	for _, it := range r.Jobs {
		if it.JobID != nil && it.State != nil {
			out = append(out, stateItem{ID: *it.JobID, States: it.State})
		}
	}
	return out, nil
}

func (v rest4x) getJob(ctx context.Context, id string) (job, bool, error) {
	status, body, err := answer(v.e.getJob(ctx, id))
	if err != nil {
		return job{}, false, err
	}
	if unknownJob(status, body) {
		return job{}, false, nil
	}
	var r wireJobs
	if err := v.decodeOK("read job "+id, status, body, false, &r); err != nil {
		return job{}, false, err
	}
	if len(r.Jobs) == 0 {
		return job{}, false, v.t.answerError("read job "+id, status, body, false)
	}
	return r.Jobs[0].job(), true, nil
}

func (v rest4x) listJobs(ctx context.Context, window time.Duration) ([]job, error) {
	var since *string
	if window > 0 {
		since = strPtr(updateSince(window))
	}
	status, body, err := answer(v.e.listJobs(ctx, since))
	if err != nil {
		return nil, err
	}
	var r wireJobs
	if err := v.decodeOK("list jobs", status, body, false, &r); err != nil {
		return nil, err
	}
	out := make([]job, 0, len(r.Jobs))
	for _, g := range r.Jobs {
		out = append(out, g.job())
	}
	return out, nil
}

// wire builds the job description.
func (d desc) wire() wireDesc {
	r := d.req
	m := wireDesc{
		Script:                  d.script,
		Environment:             d.env,
		CurrentWorkingDirectory: r.Dir,
		StandardOutput:          backends.SlurmPath(r.Stdout),
		StandardError:           backends.SlurmPath(r.Stderr),
		Name:                    r.Name,
		Comment:                 r.Tag,
		Requeue:                 ptr(r.Requeue),
		Tasks:                   intPtr(r.NTasks),
		TasksPerNode:            intPtr(r.NTasksPerNode),
		CPUsPerTask:             intPtr(r.CPUsPerTask),
		Partition:               r.Partition,
		Account:                 r.Account,
		QoS:                     r.QoS,
		Reservation:             r.Reservation,
		Constraints:             r.Constraint,
		TimeLimit:               ptr(setNoVal(d.minutes())),
		ExcludedNodes:           r.Exclude,
	}
	if r.Nodes > 0 {
		m.Nodes = strconv.Itoa(r.Nodes)
	}
	if r.MemoryMiB > 0 {
		m.MemoryPerNode = ptr(setNoVal(r.MemoryMiB))
	}
	if r.GPUsPerTask > 0 {
		m.TRESPerTask = "gres/gpu:" + strconv.Itoa(r.GPUsPerTask)
	}
	if r.WarnSignal != "" && r.WarnBefore > 0 {
		m.KillWarningSignal = "SIG" + r.WarnSignal
		m.KillWarningDelay = ptr(setNoVal(d.warnSeconds()))
		m.KillWarningFlags = []string{"BATCH_JOB"}
	}
	if d.hold {
		m.Hold = ptr(true)
	}
	if d.exclusive {
		m.Shared = []string{"none"}
	}
	if !d.begin.IsZero() {
		m.BeginTime = ptr(setNoVal(d.begin.Unix()))
	}
	m.Dependency = d.depend
	if r.Array != nil {
		m.Array = r.Array.SlurmExpr()
	}
	return m
}

func (v rest4x) submitDesc(ctx context.Context, d desc) (backends.JobID, error) {
	b, err := json.Marshal(wireSubmitReq{Job: d.wire()})
	if err != nil {
		return "", fmt.Errorf("%w: %w", backends.ErrRejected, err)
	}
	status, body, err := answer(v.e.submit(ctx, bytes.NewReader(b)))
	if err != nil {
		return "", err
	}
	var r wireSubmitResp
	if status != http.StatusOK || json.Unmarshal(body, &r) != nil || r.JobID == nil {
		return "", v.t.answerError("submit", status, body, true)
	}
	return backends.JobID(strconv.FormatInt(*r.JobID, 10)), nil
}

func (v rest4x) cancelJob(ctx context.Context, id string) error {
	status, body, err := answer(v.e.cancel(ctx, id))
	if err != nil {
		return err
	}
	var r wireCancel
	if status != http.StatusOK || json.Unmarshal(body, &r) != nil {
		return cancelAnswer(v.t, id, status, body)
	}
	// 200 can still carry a failure per job (v0.0.42): 2017 unknown, 2021
	// finished; v0.0.40 and v0.0.41 answer 200 with no per-job status
	for _, s := range r.Status {
		if s.Error != nil && s.Error.Code != nil {
			if err := cancelStatus(v.t, id, *s.Error.Code, deref(s.Error.String)); err != nil {
				return err
			}
		}
	}
	return nil
}

func (v rest4x) pingOnce(ctx context.Context) error {
	status, body, err := answer(v.e.ping(ctx))
	if err != nil {
		return err
	}
	if status != http.StatusOK {
		return v.t.answerError("ping", status, body, false)
	}
	var r wirePing
	if json.Unmarshal(body, &r) != nil {
		return nil // the controller answered; its body is not ours to judge
	}
	for _, p := range r.Pings {
		if (p.Pinged != nil && *p.Pinged != "UP") || (p.Responding != nil && !*p.Responding) {
			return notResponding(v.t)
		}
	}
	return nil
}

func (v rest4x) nodeInfo(ctx context.Context, name string) ([]string, string, error) {
	status, body, err := answer(v.e.node(ctx, name))
	if err != nil {
		return nil, "", err
	}
	var r wireNodes
	if err := v.decodeOK("read node "+name, status, body, false, &r); err != nil {
		return nil, "", err
	}
	if len(r.Nodes) == 0 {
		return nil, "", v.t.answerError("read node "+name, status, body, false)
	}
	return r.Nodes[0].State, deref(r.Nodes[0].Reason), nil
}

func (v rest4x) partitions(ctx context.Context) ([]backends.Partition, error) {
	status, body, err := answer(v.e.partitions(ctx))
	if err != nil {
		return nil, err
	}
	var r wirePartitions
	if err := v.decodeOK("read partitions", status, body, false, &r); err != nil {
		return nil, err
	}
	out := make([]backends.Partition, 0, len(r.Partitions))
	for _, w := range r.Partitions {
		p := backends.Partition{Name: deref(w.Name)}
		if w.Nodes != nil && w.Nodes.Total != nil {
			p.TotalNodes = int(*w.Nodes.Total)
		}
		if w.CPUs != nil && w.CPUs.Total != nil {
			p.TotalCPUs = int(*w.CPUs.Total)
		}
		if m := w.Maximums; m != nil {
			if n, ok := m.Time.value(); ok {
				p.MaxTime = time.Duration(n) * time.Minute
			}
			if n, ok := m.Nodes.value(); ok {
				p.MaxNodes = int(n)
			}
			if n, ok := m.CPUsPerNode.value(); ok {
				p.MaxCPUsPerNode = int(n)
			}
			if n, ok := m.PartitionMemoryPerNode.value(); ok {
				p.MaxMemPerNodeMiB = n
			}
		}
		if w.Partition != nil {
			p.Up, p.Inactive = partitionState(w.Partition.State)
		}
		out = append(out, p)
	}
	return out, nil
}

// partitionState reads a partition's state words: up (UP) and inactive
// (INACTIVE: new jobs refused).
func partitionState(states []string) (up, inactive bool) {
	for _, s := range states {
		switch strings.ToUpper(s) {
		case "UP":
			up = true
		case "INACTIVE":
			inactive = true
		}
	}
	return up, inactive
}

// job reads a job record.
func (g wireJob) job() job {
	j := job{States: g.JobState, Comment: deref(g.Comment), Reason: deref(g.StateReason), Nodes: deref(g.Nodes), Alloc: deref(g.TRESAlloc)}
	if g.JobID != nil {
		j.ID = *g.JobID
	}
	j.Submit, _ = g.SubmitTime.value()
	j.Start, _ = g.StartTime.value()
	j.End, _ = g.EndTime.value()
	j.LimitMin, _ = g.TimeLimit.value()
	j.ArrayJobID, _ = g.ArrayJobID.value()
	j.ArrayTaskID, j.ArrayTaskSet = g.ArrayTaskID.value()
	j.ArrayTasks = deref(g.ArrayTaskString)
	if e := g.ExitCode; e != nil {
		if rc, ok := e.ReturnCode.value(); ok {
			j.ExitSet, j.ExitCode = true, int(rc)
		}
		if e.Signal != nil {
			if n, ok := e.Signal.ID.value(); ok {
				j.Signal = int(n)
			}
		}
	}
	return j
}
