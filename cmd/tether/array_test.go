package main

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"github.com/rogpeppe/go-internal/testscript"
	"github.com/tether-hpc/tether/schema"
)

// elementJob splits an array element's job id: Slurm's and the local
// backend's "17_5", PBS's "17[5].pbshost".
var elementJob = regexp.MustCompile(`^(\d+)(?:_(\d+)|\[(\d+)\](.*))$`)

// arraycheck FILE SIZE MOD REM WORD OTHER [ATTEMPTS]: FILE's last line is
// an array run's outcome with SIZE elements; element i ended WORD when
// i%MOD == REM and OTHER otherwise; every element's first attempt was an
// element of ONE scheduler array (its index the element's), and an
// element with ATTEMPTS attempts (default 1) ended in a job of its own
// (a retry is a single job, never the array again).
func cmdArrayCheck(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 6 || len(args) > 7 {
		ts.Fatalf("usage: arraycheck file size mod rem word other [attempts]")
	}
	num := func(s string) int {
		n, err := strconv.Atoi(s)
		if err != nil {
			ts.Fatalf("arraycheck: %q is not a number", s)
		}
		return n
	}
	size, mod, rem := num(args[1]), num(args[2]), num(args[3])
	retried := 1
	if len(args) == 7 {
		retried = num(args[6])
	}
	data := ts.ReadFile(args[0])
	lines := strings.Split(strings.TrimSpace(data), "\n")
	var o schema.Outcome
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &o); err != nil {
		ts.Fatalf("arraycheck: last line of %s: %v", args[0], err)
	}
	if len(o.Elements) != size || o.Size != size {
		ts.Fatalf("arraycheck: %d elements (size %d), want %d", len(o.Elements), o.Size, size)
	}
	arrays := map[string]int{}
	var bad []string
	for i, el := range o.Elements {
		want := args[5]
		if i%mod == rem {
			want = args[4]
		}
		if el.Index != i || el.Outcome != want {
			bad = append(bad, fmt.Sprintf("element %d (index %d): %s (%s), want %s", i, el.Index, el.Outcome, el.Reason, want))
			continue
		}
		m := elementJob.FindStringSubmatch(el.JobID)
		switch {
		case el.Attempts == 1 && m == nil:
			bad = append(bad, fmt.Sprintf("element %d: job %q is not an array element", i, el.JobID))
		case el.Attempts == 1:
			idx := m[2] + m[3]
			if idx != strconv.Itoa(i) {
				bad = append(bad, fmt.Sprintf("element %d: job %q has index %s", i, el.JobID, idx))
			}
			arrays[m[1]]++
		case el.Attempts != retried:
			bad = append(bad, fmt.Sprintf("element %d: %d attempts, want 1 or %d", i, el.Attempts, retried))
		case m != nil:
			bad = append(bad, fmt.Sprintf("element %d: its retry %q is an array element, not a job of its own", i, el.JobID))
		}
	}
	if len(arrays) > 1 {
		bad = append(bad, fmt.Sprintf("first attempts in %d scheduler arrays %v, want one", len(arrays), arrays))
	}
	if len(bad) > 0 {
		if len(bad) > 10 {
			bad = append(bad[:10], fmt.Sprintf("... and %d more", len(bad)-10))
		}
		ts.Fatalf("arraycheck:\n%s", strings.Join(bad, "\n"))
	}
	ts.Logf("arraycheck: %d elements as expected; counts %v; first attempts in arrays %v", size, o.Counts, arrays)
}
