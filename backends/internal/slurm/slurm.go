// Package slurm holds what the sbatch and slurmrest backends share: the
// mapping of Slurm's job states onto tether's normalized states, hostlist
// expansion, and Slurm's timestamp, time-limit and exit-code formats
// (durations themselves are package units').
package slurm

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/tether-hpc/tether/backends"
	"github.com/tether-hpc/tether/internal/units"
)

// states maps every base job state Slurm 22.05–24.11 reports.
var states = map[string]backends.State{
	"PENDING":       backends.Pending,
	"RESV_DEL_HOLD": backends.Pending,
	"REQUEUED":      backends.Requeued,
	"REQUEUE_HOLD":  backends.Requeued,
	"REQUEUE_FED":   backends.Requeued,
	"CONFIGURING":   backends.Configuring,
	"POWER_UP_NODE": backends.Configuring,
	"RUNNING":       backends.Running,
	"RESIZING":      backends.Running,
	"SIGNALING":     backends.Running,
	"STAGE_OUT":     backends.Running,
	"UPDATE_DB":     backends.Running,
	"COMPLETING":    backends.Completing,
	"SUSPENDED":     backends.Suspended,
	"STOPPED":       backends.Suspended,
	"COMPLETED":     backends.Completed,
	"FAILED":        backends.Failed,
	"SPECIAL_EXIT":  backends.SpecialExit,
	"LAUNCH_FAILED": backends.Failed,
	"TIMEOUT":       backends.Timeout,
	"DEADLINE":      backends.Deadline,
	"CANCELLED":     backends.Cancelled,
	"REVOKED":       backends.Cancelled,
	"NODE_FAIL":     backends.NodeFail,
	"PREEMPTED":     backends.Preempted,
	"OUT_OF_MEMORY": backends.OutOfMemory,
	"BOOT_FAIL":     backends.BootFail,
}

// MapState normalizes a Slurm state string: "COMPLETED", "CANCELLED by 0",
// "RUNNING+COMPLETING" or a REST state list's base and flags.
func MapState(native string, flags ...string) backends.State {
	s := strings.ToUpper(strings.TrimSpace(native))
	if i := strings.IndexByte(s, ' '); i >= 0 { // "CANCELLED by 1000"
		s = s[:i]
	}
	parts := strings.Split(s, "+")
	base, ok := states[parts[0]]
	if !ok {
		return backends.Unknown
	}
	// Flags win over the base state in the order Slurm's own
	// job_state_string() applies them (what squeue prints): a COMPLETED job
	// still COMPLETING is not final, PENDING+REQUEUED is a requeue,
	// RUNNING+CONFIGURING still boots its nodes, RUNNING+STOPPED is stopped.
	set := map[string]bool{}
	for _, f := range append(parts[1:], flags...) {
		set[strings.ToUpper(strings.TrimSpace(f))] = true
	}
	for _, f := range flagOrder {
		if set[f] {
			if f == "COMPLETING" {
				return backends.Completing
			}
			return states[f]
		}
	}
	return base
}

// flagOrder is the precedence of job state flags in Slurm's
// job_state_string().
var flagOrder = []string{"COMPLETING", "STAGE_OUT", "CONFIGURING", "RESIZING", "REQUEUED", "REQUEUE_FED",
	"REQUEUE_HOLD", "SPECIAL_EXIT", "STOPPED", "REVOKED", "RESV_DEL_HOLD", "SIGNALING"}

// KnownStates lists the Slurm base states MapState knows.
func KnownStates() []string {
	out := make([]string, 0, len(states))
	for s := range states {
		out = append(out, s)
	}
	return out
}

// maxHosts bounds one hostlist's expansion: the largest machines have
// some 10,000 nodes, and a damaged list ("n[0-99999][0-99999]") must not
// cost gigabytes. An item past the bound is kept as written.
const maxHosts = 1 << 17

// ExpandHostlist turns "node[1-3,5],gpu01" into its host names.
func ExpandHostlist(s string) []string {
	s = strings.TrimSpace(s)
	if s == "" || s == "(null)" || s == "None assigned" {
		return nil
	}
	var out []string
	for _, item := range splitTop(s) {
		hosts, ok := expandOne(item, maxHosts-len(out))
		if !ok {
			hosts = []string{item}
		}
		out = append(out, hosts...)
	}
	return out
}

// splitTop splits on commas outside brackets.
func splitTop(s string) []string {
	var parts []string
	depth, start := 0, 0
	for i, c := range s {
		switch c {
		case '[':
			depth++
		case ']':
			depth--
		case ',':
			if depth == 0 {
				parts = append(parts, s[start:i])
				start = i + 1
			}
		}
	}
	return append(parts, s[start:])
}

// expandOne expands one item of a hostlist into at most budget names (ok
// false: it would be more).
func expandOne(item string, budget int) ([]string, bool) {
	open := strings.IndexByte(item, '[')
	if open < 0 {
		if item == "" {
			return nil, true
		}
		return []string{item}, budget >= 1
	}
	close := strings.IndexByte(item[open:], ']')
	if close < 0 {
		return []string{item}, budget >= 1
	}
	close += open
	prefix, ranges, rest := item[:open], item[open+1:close], item[close+1:]
	suffixes, ok := expandOne(rest, budget)
	if !ok {
		return nil, false
	}
	if len(suffixes) == 0 {
		suffixes = []string{""}
	}
	var out []string
	for _, r := range strings.Split(ranges, ",") {
		lo, hi, isRange := strings.Cut(r, "-")
		if !isRange {
			hi = lo
		}
		a, err1 := strconv.Atoi(lo)
		b, err2 := strconv.Atoi(hi)
		if err1 != nil || err2 != nil || b < a {
			if len(out)+1 > budget {
				return nil, false
			}
			out = append(out, prefix+r)
			continue
		}
		if n := (b - a + 1) * len(suffixes); b-a >= budget || n > budget-len(out) {
			return nil, false
		}
		width := len(lo)
		for n := a; n <= b; n++ {
			for _, suf := range suffixes {
				out = append(out, fmt.Sprintf("%s%0*d%s", prefix, width, n, suf))
			}
		}
	}
	return out, true
}

// ParseTime reads Slurm's local timestamps ("2026-11-26T21:01:14");
// "N/A", "Unknown", "None" and empty give the zero time.
func ParseTime(s string) time.Time {
	t, err := time.ParseInLocation("2006-01-02T15:04:05", strings.TrimSpace(s), time.Local)
	if err != nil {
		return time.Time{}
	}
	return t
}

// FormatLimit writes a walltime for --time, rounding up to whole minutes
// (Slurm's granularity), at least one: "D-HH:MM:00".
func FormatLimit(d time.Duration) string {
	m := max((d+time.Minute-1)/time.Minute, 1)
	return units.FormatDHMS(m * time.Minute)
}

// WaitStatus splits a raw wait status (squeue's exit_code, REST
// v0.0.38's exit_code) into an exit code and a signal.
func WaitStatus(raw int) (code, sig int) {
	return (raw >> 8) & 0xff, raw & 0x7f
}

// ParseExitPair reads sacct's and scontrol's "code:signal".
func ParseExitPair(s string) (code, sig int, ok bool) {
	a, b, found := strings.Cut(strings.TrimSpace(s), ":")
	if !found {
		return 0, 0, false
	}
	c, err1 := strconv.Atoi(a)
	g, err2 := strconv.Atoi(b)
	if err1 != nil || err2 != nil {
		return 0, 0, false
	}
	return c, g, true
}

// EscapePattern keeps a path literal for Slurm's filename patterns
// (sbatch --output, the REST job's standard_output): %% for %.
func EscapePattern(p string) string { return strings.ReplaceAll(p, "%", "%%") }

// ParseTRES reads a job's allocated TRES ("cpu=4,mem=2G,node=1,
// billing=4,gres/gpu=2", Slurm's tres_alloc_str and sacct's AllocTRES).
// Unknown kinds are left out; a malformed count is skipped.
func ParseTRES(s string) backends.Allocation {
	var a backends.Allocation
	for _, part := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			continue
		}
		if k == "mem" {
			if m, err := units.ParseMemory(v); err == nil {
				a.MemoryMiB = m
			}
			continue
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			continue
		}
		switch {
		case k == "cpu":
			a.CPUs = n
		case k == "node":
			a.Nodes = n
		case k == "gres/gpu":
			a.GPUs = n // the total; gres/gpu:a100 repeats it by type
		}
	}
	return a
}
