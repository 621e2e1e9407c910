package pbs

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"

	"github.com/tether-hpc/tether/backends"
	"github.com/tether-hpc/tether/internal/units"
)

// usageDoc is the part of `qstat -x -f -F json` Usage reads.
type usageDoc struct {
	Jobs map[string]struct {
		JobState      string `json:"job_state"`
		ExecHost      string `json:"exec_host"`
		ResourcesUsed struct {
			Walltime string      `json:"walltime"`
			Mem      string      `json:"mem"`
			NCPUs    json.Number `json:"ncpus"`
		} `json:"resources_used"`
		ResourceList struct {
			NGPUs json.Number `json:"ngpus"`
		} `json:"Resource_List"`
	} `json:"Jobs"`
}

// Usage reads a finished job's resources_used from the server's job
// history (one qstat -x -f -F json): walltime, ncpus × walltime, the
// requested ngpus × walltime, mem (the MoM's largest sample of the job's
// resident memory) and the hosts of exec_host. Without history, or
// before the job has finished, ok is false.
func (b *Backend) Usage(ctx context.Context, id backends.JobID) (backends.Usage, bool, error) {
	if !validID(string(id)) {
		return backends.Usage{}, false, nil
	}
	r, err := b.Run(ctx, nil, "qstat", "-x", "-f", "-F", "json", string(id))
	if err != nil {
		return backends.Usage{}, false, err
	}
	if len(strings.TrimSpace(string(r.Stdout))) == 0 {
		if onlyUnknown(r.Stderr) {
			return backends.Usage{}, false, nil
		}
		return backends.Usage{}, false, r.Err(failures)
	}
	u, ok, err := ParseUsage(r.Stdout, string(id))
	return u, ok, err
}

// ParseUsage reads one job's usage from qstat -x -f -F json output.
func ParseUsage(raw []byte, id string) (backends.Usage, bool, error) {
	var d usageDoc
	if err := decodeQstat(raw, &d); err != nil {
		return backends.Usage{}, false, err
	}
	j, ok := d.Jobs[id]
	if !ok || (j.JobState != "F" && j.JobState != "X") || j.ResourcesUsed.Walltime == "" {
		return backends.Usage{}, false, nil
	}
	el := units.ParseLimit(j.ResourcesUsed.Walltime)
	ncpus, _ := j.ResourcesUsed.NCPUs.Int64()
	ngpus, _ := j.ResourceList.NGPUs.Int64()
	hosts := map[string]bool{}
	for _, part := range strings.Split(j.ExecHost, "+") {
		if h, _, _ := strings.Cut(part, "/"); h != "" {
			hosts[h] = true
		}
	}
	return backends.Usage{
		Elapsed: el, CPUSeconds: el.Seconds() * float64(ncpus), GPUSeconds: el.Seconds() * float64(ngpus),
		MaxRSSBytes: pbsSize(j.ResourcesUsed.Mem), Nodes: len(hosts), Source: "qstat",
	}, true, nil
}

// pbsSize parses PBS sizes ("12345kb", "3mb", "1gb", "512b", "2w") into bytes.
func pbsSize(s string) int64 {
	s = strings.ToLower(strings.TrimSpace(s))
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"tb", 1 << 40}, {"gb", 1 << 30}, {"mb", 1 << 20}, {"kb", 1 << 10}, {"tw", 8 << 40}, {"gw", 8 << 30}, {"mw", 8 << 20}, {"kw", 8 << 10}, {"b", 1}, {"w", 8}} {
		if strings.HasSuffix(s, u.suffix) {
			s, mult = strings.TrimSuffix(s, u.suffix), u.mult
			break
		}
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0
	}
	return v * mult
}
