package sbatch

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/tether-hpc/tether/backends"
)

// ArrayArgs is sbatch's command line for one array of spec: --array=0-N
// (with %max_running), and %a where the request's paths hold the
// element's index.
func ArrayArgs(req backends.JobRequest, spec backends.ArraySpec) []string {
	a := Args(req)
	for i, s := range a {
		if strings.HasPrefix(s, "--output=") || strings.HasPrefix(s, "--error=") {
			a[i] = strings.ReplaceAll(s, backends.ArrayIndexToken, "%a")
		}
	}
	arr := "--array=" + spec.SlurmExpr()
	// before the extra arguments and the script
	return append(a[:1], append([]string{arr}, a[1:]...)...)
}

// SubmitArray submits one job array with ONE sbatch --parsable.
func (b *Backend) SubmitArray(ctx context.Context, req backends.JobRequest, spec backends.ArraySpec) (backends.JobID, error) {
	out, err := b.Output(ctx, failures, req.Env, "sbatch", ArrayArgs(req, spec)...)
	if err != nil {
		return "", err
	}
	id, _, _ := strings.Cut(strings.TrimSpace(string(out)), ";")
	if !isNum(id) {
		return "", fmt.Errorf("%w: sbatch printed %q, not a job id", backends.ErrUnavailable, out)
	}
	return backends.JobID(id), nil
}

// ElementID is Slurm's "<array>_<index>".
func (b *Backend) ElementID(array backends.JobID, i int) backends.JobID {
	return backends.JobID(string(array) + "_" + strconv.Itoa(i))
}

// ArrayIndexVar: Slurm gives each element SLURM_ARRAY_TASK_ID.
func (b *Backend) ArrayIndexVar() string { return "SLURM_ARRAY_TASK_ID" }
