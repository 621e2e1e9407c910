package schema

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// MaxArrayElements is the most elements one array Task may declare.
const MaxArrayElements = 100000

// TaskArray makes a Task an array: count elements, or one per line of a
// params file (JSON Lines: one JSON object per line). Every element is a
// Task of its own (its own run directory, attempts and outcome); the
// array is submitted as one scheduler array.
type TaskArray struct {
	Count      int    `toml:"count" json:"count,omitempty" doc:"number of elements (indices 0..count-1); set count or params, not both" min:"0"`
	Params     string `toml:"params" json:"params,omitempty" doc:"JSON Lines file (one JSON object per line, relative to the task file): one element per line, whose object reaches it as TETHER_PARAMS and, for values that are strings, numbers or booleans under names that are valid variable names, as TETHER_PARAM_<name>"`
	MaxRunning int    `toml:"max_running" json:"max_running,omitempty" doc:"at most this many elements run at once (sbatch --array=...%N, qsub -J ...%N; 0: the scheduler's limit)" min:"0"`
	// Elements are the params file's objects in order, read when the
	// task file is loaded (they are part of the spec's identity).
	Elements []json.RawMessage `toml:"-" json:"elements,omitempty"`
}

// Enabled reports whether the Task is an array.
func (a TaskArray) Enabled() bool { return a.Count > 0 || a.Params != "" }

// Size is the number of elements.
func (a TaskArray) Size() int {
	if a.Params != "" {
		return len(a.Elements)
	}
	return a.Count
}

// ElementParams is element i's object ("" for a count array).
func (a TaskArray) ElementParams(i int) json.RawMessage {
	if i < 0 || i >= len(a.Elements) {
		return nil
	}
	return a.Elements[i]
}

// loadParams reads the params file (relative to the task file).
func (t *Task) loadParams(file string) Errors {
	a := &t.Array
	if a.Params == "" {
		return nil
	}
	p := a.Params
	if !filepath.IsAbs(p) {
		base := filepath.Dir(file)
		if abs, err := filepath.Abs(base); err == nil {
			base = abs
		}
		p = filepath.Join(base, p)
	}
	data, err := os.ReadFile(p)
	if err != nil {
		return Errors{t.src.errAt("array.params", "cannot read the params file: %v", err)}
	}
	a.Params = p
	var errs Errors
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	line := 0
	for sc.Scan() {
		line++
		s := bytes.TrimSpace(sc.Bytes())
		if len(s) == 0 {
			continue
		}
		if s[0] != '{' || !json.Valid(s) {
			errs = append(errs, &Error{File: p, Line: line, Msg: "want one JSON object per line (element " + strconv.Itoa(len(a.Elements)) + ")"})
			continue
		}
		var c bytes.Buffer
		if err := json.Compact(&c, s); err != nil {
			errs = append(errs, &Error{File: p, Line: line, Msg: err.Error()})
			continue
		}
		a.Elements = append(a.Elements, json.RawMessage(c.Bytes()))
		if len(a.Elements) > MaxArrayElements {
			return append(errs, &Error{File: p, Line: line, Msg: fmt.Sprintf("more than %d elements", MaxArrayElements)})
		}
	}
	if err := sc.Err(); err != nil {
		errs = append(errs, &Error{File: p, Line: line + 1, Msg: err.Error()})
	}
	if len(errs) == 0 && len(a.Elements) == 0 {
		errs = append(errs, t.src.errAt("array.params", "%s has no elements", p))
	}
	return errs
}

// validateArray checks [array] and [proceed] min_succeeded.
func (t *Task) validateArray() Errors {
	var errs Errors
	e := func(key, format string, args ...any) { errs = append(errs, t.src.errAt(key, format, args...)) }
	a := t.Array
	switch {
	case a.Count < 0:
		e("array.count", "must not be negative (got %d)", a.Count)
	case a.Count > 0 && a.Params != "":
		e("array.params", "set count or params, not both")
	case a.Count > MaxArrayElements:
		e("array.count", "%d is more than the %d elements an array may have", a.Count, MaxArrayElements)
	}
	if a.MaxRunning < 0 {
		e("array.max_running", "must not be negative (got %d)", a.MaxRunning)
	}
	if a.MaxRunning > 0 && !a.Enabled() {
		e("array.max_running", "needs array.count or array.params")
	}
	if m := t.Proceed.MinSucceeded; m != nil {
		switch {
		case *m < 0 || *m > 1:
			e("proceed.min_succeeded", "must be a fraction between 0 and 1 (got %g)", *m)
		case !a.Enabled():
			e("proceed.min_succeeded", "applies to array Tasks only (set array.count or array.params)")
		}
	}
	return errs
}

// MinSucceededOr is the fraction of an array's elements that must succeed
// (or end partial) for the array to proceed: min_succeeded, else all.
func (p Proceed) MinSucceededOr() float64 {
	if p.MinSucceeded == nil {
		return 1
	}
	return *p.MinSucceeded
}

// Element is what makes a run one element of an array run.
type Element struct {
	// Array is the array run's id; Index the element's (0-based).
	Array string `json:"array"`
	Index int    `json:"index"`
	Size  int    `json:"size"`
	// Params is the element's object from the params file.
	Params json.RawMessage `json:"params,omitempty"`
}

// ElementRunID is the run id of an array run's element i.
func ElementRunID(array string, i int) string { return array + "." + strconv.Itoa(i) }

// ElementEnv is what the wrapper exports to an element (every rank):
// TETHER_ARRAY_RUN_ID, TETHER_ARRAY_INDEX, TETHER_ARRAY_SIZE,
// TETHER_PARAMS (the JSON object, "{}" for a count array) and
// TETHER_PARAM_<name> for each value of the object that is a string, a
// number or a boolean under a name that is a valid variable name.
func ElementEnv(el *Element) map[string]string {
	if el == nil {
		return nil
	}
	env := map[string]string{
		"TETHER_ARRAY_RUN_ID": el.Array,
		"TETHER_ARRAY_INDEX":  strconv.Itoa(el.Index),
		"TETHER_ARRAY_SIZE":   strconv.Itoa(el.Size),
		"TETHER_PARAMS":       "{}",
	}
	if len(el.Params) == 0 {
		return env
	}
	// run.json is indented, and so are the objects it holds
	var c bytes.Buffer
	if json.Compact(&c, el.Params) == nil {
		env["TETHER_PARAMS"] = c.String()
	} else {
		env["TETHER_PARAMS"] = string(el.Params)
	}
	var obj map[string]json.RawMessage
	if json.Unmarshal(el.Params, &obj) != nil {
		return env
	}
	for k, raw := range obj {
		if !validEnvKey(k) {
			continue
		}
		var v any
		d := json.NewDecoder(bytes.NewReader(raw))
		d.UseNumber()
		if d.Decode(&v) != nil {
			continue
		}
		switch x := v.(type) {
		case string:
			if !strings.ContainsRune(x, 0) {
				env["TETHER_PARAM_"+k] = x
			}
		case json.Number:
			env["TETHER_PARAM_"+k] = x.String()
		case bool:
			env["TETHER_PARAM_"+k] = strconv.FormatBool(x)
		}
	}
	return env
}

// ArrayState is an array run's record of its scheduler arrays.
type ArrayState struct {
	Size       int `json:"size"`
	MaxRunning int `json:"max_running,omitempty"`
	// Chunks are the scheduler arrays it was submitted as: one, or
	// several past the site's maximum array size.
	Chunks []ArrayChunk `json:"chunks"`
}

// ArrayChunk is one scheduler array: elements First..Last, whose
// scheduler indices are 0..Last-First.
type ArrayChunk struct {
	First       int        `json:"first"`
	Last        int        `json:"last"`
	JobID       string     `json:"job_id,omitempty"`
	SubmittedAt *time.Time `json:"submitted_at,omitempty"`
	// Unsent: the last submit certainly never reached the scheduler.
	Unsent bool `json:"unsent,omitempty"`
	// Recorded: every element's record has its job id.
	Recorded     bool       `json:"recorded,omitempty"`
	CancelSentAt *time.Time `json:"cancel_sent_at,omitempty"`
}

// ElementOutcome is one element in an array run's outcome.
type ElementOutcome struct {
	Index    int               `json:"index"`
	RunID    string            `json:"run_id"`
	Outcome  string            `json:"outcome"`
	Final    bool              `json:"final"`
	Reason   string            `json:"reason"`
	Cause    Cause             `json:"cause,omitempty"`
	JobID    string            `json:"job_id"`
	ExitCode *int              `json:"exit_code"`
	Attempts int               `json:"attempts"`
	Fraction *float64          `json:"fraction"`
	Results  map[string]string `json:"results"`
	Params   json.RawMessage   `json:"params,omitempty"`
}
