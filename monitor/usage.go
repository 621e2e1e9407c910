package monitor

import (
	"context"
	"strings"
	"time"

	"github.com/tether-hpc/tether/backends"
	"github.com/tether-hpc/tether/schema"
)

// attemptUsage is what the current attempt used: the scheduler's
// accounting where the backend reads it (one call, at the decision), with
// tether's own evidence for what accounting leaves out (elapsed from the
// wrapper's started and exit files, the allocation from the scheduler's
// status or the request). nil for an attempt that never started. With
// wait, a job accounting has not closed yet is asked about again for up
// to usageWait; without it, once.
func (e *Engine) attemptUsage(ctx context.Context, rec *schema.RunRecord, obs observation, wait bool) *schema.Usage {
	cur := obs.cur
	if cur == nil {
		return nil
	}
	own, ran := evidenceUsage(rec, obs)
	r, ok := e.Backend.(backends.UsageReader)
	if !ok || cur.JobID == "" {
		if !ran {
			return nil
		}
		return &own
	}
	acct, found, err := e.accounting(ctx, r, backends.JobID(cur.JobID), wait)
	if err != nil {
		e.Log.Warn("cannot read the job's accounting; usage from tether's own evidence", "run", rec.RunID, "job", cur.JobID, "err", err)
	}
	if err != nil || !found {
		if !ran {
			return nil
		}
		return &own
	}
	u := schema.Usage{ElapsedS: acct.Elapsed.Seconds(), CPUS: acct.CPUSeconds, GPUS: acct.GPUSeconds,
		MaxRSSBytes: acct.MaxRSSBytes, Nodes: acct.Nodes, Source: acct.Source}
	if u.ElapsedS == 0 && ran {
		// accounting has not closed the job yet: tether's own clock
		u.ElapsedS, u.CPUS, u.GPUS = own.ElapsedS, own.CPUS, own.GPUS
		u.Source += "+exit file"
	}
	if u.Nodes == 0 {
		u.Nodes = own.Nodes
	}
	u.NodeS = u.ElapsedS * float64(u.Nodes)
	return &u
}

// usageWait is how long a decision waits for the scheduler's accounting
// to close a job that has just ended (a decision from the wrapper's exit
// file comes before the scheduler has seen the end).
const usageWait = 3 * time.Second

// accounting asks the backend for the job's usage until its accounting
// has closed the job, for at most usageWait.
func (e *Engine) accounting(ctx context.Context, r backends.UsageReader, id backends.JobID, wait bool) (backends.Usage, bool, error) {
	deadline := time.Now()
	if wait {
		deadline = deadline.Add(usageWait)
	}
	for {
		e.called("usage")
		u, found, err := r.Usage(ctx, id)
		if found || err != nil || !time.Now().Before(deadline) {
			return u, found, err
		}
		t := time.NewTimer(300 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return u, false, nil
		case <-t.C:
		}
	}
}

// evidenceUsage is the attempt's usage from tether's own files: elapsed
// between the wrapper's start and its exit record (or the scheduler's
// start and end), times the CPUs and GPUs the scheduler allocated (else
// requested). ran is false when nothing shows the attempt ran.
func evidenceUsage(rec *schema.RunRecord, obs observation) (schema.Usage, bool) {
	var start, end = obs.st.Started, obs.in.Exit
	var u schema.Usage
	js := obs.st.Job
	switch {
	case start != nil && end != nil && end.Time.After(start.Time):
		u.ElapsedS = end.Time.Sub(start.Time).Seconds()
	case js != nil && !js.Start.IsZero() && js.End.After(js.Start):
		u.ElapsedS = js.End.Sub(js.Start).Seconds()
	default:
		return u, false
	}
	r := rec.Task.Resources
	cpus, gpus, nodes := r.TotalTasks()*max(r.CPUsPerTask, 1), r.TotalTasks()*r.GPUsPerTask, max(r.Nodes, 1)
	if js != nil {
		if js.Alloc.CPUs > 0 {
			cpus = js.Alloc.CPUs
		}
		if js.Alloc.GPUs > 0 {
			gpus = js.Alloc.GPUs
		}
		if js.Alloc.Nodes > 0 {
			nodes = js.Alloc.Nodes
		}
	}
	if n := len(obs.in.Nodes); n > 0 {
		nodes = n
	}
	u.CPUS, u.GPUS, u.Nodes = u.ElapsedS*float64(cpus), u.ElapsedS*float64(gpus), nodes
	u.NodeS = u.ElapsedS * float64(nodes)
	u.Source = "exit file"
	return u, true
}

// runUsage sums the attempts' usage (nil when none has any).
func runUsage(rec *schema.RunRecord) *schema.Usage {
	var t *schema.Usage
	for _, a := range rec.Attempts {
		if a.Usage == nil {
			continue
		}
		if t == nil {
			t = &schema.Usage{}
		}
		t.Add(*a.Usage)
	}
	return t
}

// dagOf is the Airflow DAG a run's key names (the provider's keys are
// "airflow/<dag_id>/<run_id>/<task_id>"), or "".
func dagOf(key string) string {
	rest, ok := strings.CutPrefix(key, "airflow/")
	if !ok {
		return ""
	}
	dag, _, _ := strings.Cut(rest, "/")
	return dag
}
