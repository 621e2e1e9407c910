package pbs

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/tether-hpc/tether/backends"
)

// arrayIndexPattern is where PBS writes a subjob's index in its -o and
// -e paths.
const arrayIndexPattern = "^array_index^"

// ArrayArgs is qsub's command line for one array of spec: -J 0-N (with
// %max_running, OpenPBS's limit on running subjobs), and ^array_index^
// where the request's paths hold the subjob's index.
func ArrayArgs(req backends.JobRequest, spec backends.ArraySpec, o Options) []string {
	req.Stdout = strings.ReplaceAll(req.Stdout, backends.ArrayIndexToken, arrayIndexPattern)
	req.Stderr = strings.ReplaceAll(req.Stderr, backends.ArrayIndexToken, arrayIndexPattern)
	a := Args(req, o)
	// OpenPBS refuses "-r n" with -J (qsub: "cannot submit non-rerunable
	// Array Job"): array subjobs are rerunnable, which is the default
	for i := 0; i+1 < len(a); i++ {
		if a[i] == "-r" && a[i+1] == "n" {
			a = append(a[:i], a[i+2:]...)
			break
		}
	}
	j := fmt.Sprintf("0-%d", spec.Size-1)
	if spec.MaxRunning > 0 {
		j += "%" + strconv.Itoa(spec.MaxRunning)
	}
	// before the extra arguments and the script
	return append([]string{"-J", j}, a...)
}

// SubmitArray submits one job array with ONE qsub -J; qsub prints the
// array's id ("17[].pbshost").
func (b *Backend) SubmitArray(ctx context.Context, req backends.JobRequest, spec backends.ArraySpec) (backends.JobID, error) {
	r, err := b.Run(ctx, req.Env, "qsub", ArrayArgs(req, spec, b.options())...)
	return b.qsubResult(r, err)
}

// ElementID is PBS's subjob id: "17[5].pbshost" for array "17[].pbshost".
func (b *Backend) ElementID(array backends.JobID, i int) backends.JobID {
	seq, rest, _ := strings.Cut(string(array), "[]")
	return backends.JobID(seq + "[" + strconv.Itoa(i) + "]" + rest)
}

// ArrayIndexVar: PBS gives each subjob PBS_ARRAY_INDEX.
func (b *Backend) ArrayIndexVar() string { return "PBS_ARRAY_INDEX" }
