package slurmrest

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/tether-hpc/tether/backends"
	"github.com/tether-hpc/tether/backends/internal/slurm"
)

// dbJobUsage is the part of a /slurmdb/v0.0.NN/job/{id} answer Usage
// reads. v0.0.38 gives state.current as a string, v0.0.40+ as a list;
// the rest agrees: time.elapsed (s), the allocated TRES, allocation_nodes,
// and each step's tres.requested.max (the step's largest use: "mem" is
// its max RSS in bytes).
type dbJobUsage struct {
	Jobs []struct {
		JobID int64 `json:"job_id"`
		State struct {
			Current json.RawMessage `json:"current"`
		} `json:"state"`
		Time struct {
			Elapsed int64 `json:"elapsed"`
		} `json:"time"`
		AllocationNodes int64 `json:"allocation_nodes"`
		TRES            struct {
			Allocated []dbTRES `json:"allocated"`
		} `json:"tres"`
		Steps []struct {
			State json.RawMessage `json:"state"`
			Step  struct {
				ID json.RawMessage `json:"id"`
			} `json:"step"`
			TRES struct {
				Requested struct {
					Max []dbTRES `json:"max"`
				} `json:"requested"`
			} `json:"tres"`
		} `json:"steps"`
	} `json:"jobs"`
}

type dbTRES struct {
	Type  string `json:"type"`
	Name  string `json:"name"`
	Count int64  `json:"count"`
}

// dbJobPath is one job's accounting record.
func dbJobPath(version, id string) string {
	return "/slurmdb/" + version + "/job/" + id
}

// Usage reads a finished job's use from slurmdbd through slurmrestd (one
// GET of /slurmdb/.../job/{id}). Without the openapi/slurmdbd plugin, or
// while accounting has not closed the job, ok is false.
func (b *Backend) Usage(ctx context.Context, id backends.JobID) (backends.Usage, bool, error) {
	body, ok, err := b.dbJob(ctx, id)
	if err != nil || !ok {
		return backends.Usage{}, false, err
	}
	return parseDBUsage(body, string(id))
}

// dbJob GETs one job's accounting record; ok is false without the
// openapi/slurmdbd plugin or a record.
func (b *Backend) dbJob(ctx context.Context, id backends.JobID) ([]byte, bool, error) {
	version, err := b.Version(ctx)
	if err != nil {
		return nil, false, err
	}
	return b.slurmdbGet(ctx, dbJobPath(version, string(id)), "read job "+string(id)+"'s accounting")
}

// parseDBUsage reads one job's usage from a slurmdb job answer.
func parseDBUsage(body []byte, id string) (backends.Usage, bool, error) {
	var d dbJobUsage
	if err := json.Unmarshal(body, &d); err != nil {
		return backends.Usage{}, false, fmt.Errorf("%w: slurmrestd's accounting answer for job %s: %w", backends.ErrUnavailable, id, err)
	}
	for _, j := range d.Jobs {
		if fmt.Sprint(j.JobID) != id {
			continue
		}
		st := states(j.State.Current)
		if len(st) == 0 || !slurm.MapState(st[0], st[1:]...).Terminal() {
			return backends.Usage{}, false, nil
		}
		el := time.Duration(j.Time.Elapsed) * time.Second
		u := backends.Usage{Elapsed: el, Nodes: int(j.AllocationNodes), Source: "slurmdb"}
		for _, t := range j.TRES.Allocated {
			switch {
			case t.Type == "cpu":
				u.CPUSeconds = float64(t.Count) * el.Seconds()
			case t.Type == "gres" && t.Name == "gpu":
				u.GPUSeconds = float64(t.Count) * el.Seconds()
			case t.Type == "node" && u.Nodes == 0:
				u.Nodes = int(t.Count)
			}
		}
		for _, s := range j.Steps {
			for _, t := range s.TRES.Requested.Max {
				if t.Type == "mem" && t.Count > u.MaxRSSBytes {
					u.MaxRSSBytes = t.Count
				}
			}
		}
		return u, true, nil
	}
	return backends.Usage{}, false, nil
}

// states reads a state that is a string (v0.0.38) or a list (v0.0.40+).
func states(raw json.RawMessage) []string {
	var list []string
	if json.Unmarshal(raw, &list) == nil {
		return list
	}
	var one string
	if json.Unmarshal(raw, &one) == nil && one != "" {
		return []string{one}
	}
	return nil
}

// parseStepOOM names the steps of a slurmdb job answer that ended
// OUT_OF_MEMORY.
func parseStepOOM(body []byte, id string) (string, error) {
	var d dbJobUsage
	if err := json.Unmarshal(body, &d); err != nil {
		return "", fmt.Errorf("%w: slurmrestd's accounting answer for job %s: %w", backends.ErrUnavailable, id, err)
	}
	var out []string
	for _, j := range d.Jobs {
		if fmt.Sprint(j.JobID) != id {
			continue
		}
		for _, s := range j.Steps {
			st := states(s.State)
			if len(st) == 0 || slurm.MapState(st[0], st[1:]...) != backends.OutOfMemory {
				continue
			}
			var name string
			if json.Unmarshal(s.Step.ID, &name) != nil || name == "" {
				name = "?"
			}
			if !strings.Contains(name, ".") {
				name = id + "." + name // v0.0.38 gives "batch" or "0"
			}
			out = append(out, "step "+name+" OUT_OF_MEMORY")
		}
	}
	return strings.Join(out, ", "), nil
}
