package slurmrest

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/tether-hpc/tether/backends"
	"github.com/tether-hpc/tether/backends/internal/slurm"
)

// noVal is the {set, infinite, number} shape every v0.0.40+ number has;
// the generated types of each version convert to it.
type noVal struct {
	Infinite *bool  `json:"infinite,omitempty"`
	Number   *int64 `json:"number,omitempty"`
	Set      *bool  `json:"set,omitempty"`
}

// nv converts any generated {set, infinite, number} type to noVal.
func nv[T ~struct {
	Infinite *bool  `json:"infinite,omitempty"`
	Number   *int64 `json:"number,omitempty"`
	Set      *bool  `json:"set,omitempty"`
}](n *T) *noVal {
	if n == nil {
		return nil
	}
	v := noVal(*n)
	return &v
}

func (n *noVal) value() (int64, bool) {
	if n == nil || n.Set == nil || !*n.Set || (n.Infinite != nil && *n.Infinite) || n.Number == nil {
		return 0, false
	}
	return *n.Number, true
}

func setNoVal(v int64) noVal {
	t, f := true, false
	return noVal{Set: &t, Infinite: &f, Number: &v}
}

// job is what tether reads from a job record, version-neutral.
type job struct {
	ID       int64
	States   []string // base state first, then flags
	Reason   string
	Nodes    string
	Submit   int64 // unix seconds, 0 when unknown
	Start    int64
	End      int64
	LimitMin int64 // minutes, 0 when unlimited or unknown
	// Exit: ExitSet when the record has a real exit code.
	ExitSet  bool
	ExitCode int
	Signal   int
	// Comment is the job's comment: tether's tag (tether:<run>:<attempt>).
	Comment string
	// Alloc is the allocated TRES ("cpu=2,mem=1G,node=1").
	Alloc string
	// Array elements: the array's id and the element's index
	// (ArrayTaskSet); a pending array's record lists the indices it
	// holds in ArrayTasks ("2-199%50").
	ArrayJobID   int64
	ArrayTaskID  int64
	ArrayTaskSet bool
	ArrayTasks   string
}

// key is the id tether knows the job by: "<array>_<index>" for an array
// element, the job id otherwise.
func (j job) key() backends.JobID {
	if j.ArrayJobID > 0 && j.ArrayTaskSet {
		return backends.JobID(strconv.FormatInt(j.ArrayJobID, 10) + "_" + strconv.FormatInt(j.ArrayTaskID, 10))
	}
	return backends.JobID(strconv.FormatInt(j.ID, 10))
}

// base is the id a tag finds: the array's for an array's records.
func (j job) base() int64 {
	if j.ArrayJobID > 0 {
		return j.ArrayJobID
	}
	return j.ID
}

// statuses normalizes a job record: one status, or one per element of a
// pending array's record.
func (j job) statuses() []backends.JobStatus {
	if j.ArrayJobID == 0 || j.ArrayTaskSet || j.ArrayTasks == "" {
		return []backends.JobStatus{j.status()}
	}
	st := j.status()
	var out []backends.JobStatus
	for _, i := range ArrayIndices(j.ArrayTasks) {
		e := st
		e.ID = backends.JobID(strconv.FormatInt(j.ArrayJobID, 10) + "_" + strconv.Itoa(i))
		out = append(out, e)
	}
	return out
}

// ArrayIndices expands Slurm's array index expression ("0-3,7,9-15:2%4").
func ArrayIndices(expr string) []int {
	expr, _, _ = strings.Cut(expr, "%")
	var out []int
	for _, part := range strings.Split(expr, ",") {
		rng, stepS, _ := strings.Cut(part, ":")
		step := 1
		if stepS != "" {
			if n, err := strconv.Atoi(stepS); err == nil && n > 0 {
				step = n
			}
		}
		lo, hi, isRange := strings.Cut(rng, "-")
		a, err := strconv.Atoi(lo)
		if err != nil {
			continue
		}
		b := a
		if isRange {
			if b, err = strconv.Atoi(hi); err != nil {
				continue
			}
		}
		for i := a; i <= b && len(out) < 1<<20; i += step {
			out = append(out, i)
		}
	}
	return out
}

func unix(s int64) time.Time {
	if s <= 0 {
		return time.Time{}
	}
	return time.Unix(s, 0)
}

// status normalizes a job record.
func (j job) status() backends.JobStatus {
	st := backends.JobStatus{ID: j.key(), Native: strings.Join(j.States, "+")}
	if len(j.States) > 0 {
		st.State = slurm.MapState(j.States[0], j.States[1:]...)
	} else {
		st.State = backends.Unknown
	}
	st.Reason = j.Reason
	if st.Reason == "None" {
		st.Reason = ""
	}
	st.Nodes = slurm.ExpandHostlist(j.Nodes)
	st.Submit, st.Start, st.End = unix(j.Submit), unix(j.Start), unix(j.End)
	st.Alloc = slurm.ParseTRES(j.Alloc)
	if j.LimitMin > 0 && !st.Start.IsZero() {
		st.Deadline = st.Start.Add(time.Duration(j.LimitMin) * time.Minute)
	}
	st.PendingStart()
	if st.State.Terminal() && j.ExitSet {
		c := j.ExitCode
		st.ExitCode, st.Signal = &c, j.Signal
	} else if st.State.Terminal() {
		st.Signal = j.Signal
	}
	return st
}

// desc is a job description, version-neutral.
type desc struct {
	req       backends.JobRequest
	script    string
	env       []string
	hold      bool
	exclusive bool
	begin     time.Time // --begin: not before then (zero: none)
	depend    string    // --dependency, as sbatch takes it
}

// restOptions translates the sbatch-style extra arguments the REST API can
// express; others are refused rather than silently dropped.
func restOptions(req backends.JobRequest, now time.Time) (d desc, err error) {
	for _, a := range req.ExtraArgs {
		switch {
		case a == "--hold" || a == "-H":
			d.hold = true
		case a == "--exclusive":
			d.exclusive = true
		case strings.HasPrefix(a, "--dependency=") || strings.HasPrefix(a, "-d="):
			_, d.depend, _ = strings.Cut(a, "=")
		case strings.HasPrefix(a, "--begin="):
			if d.begin, err = beginTime(strings.TrimPrefix(a, "--begin="), now); err != nil {
				return desc{}, fmt.Errorf("%w: extra argument %q: %w", backends.ErrRejected, a, err)
			}
		default:
			return desc{}, fmt.Errorf("%w: extra argument %q is an sbatch option the slurmrest backend cannot pass (supported: --hold, --exclusive, --dependency=..., --begin=now+N<unit> or --begin=YYYY-MM-DDTHH:MM[:SS])", backends.ErrRejected, a)
		}
	}
	return d, nil
}

// beginTime reads the --begin forms the REST backend sends as a time:
// now+N with units seconds (default), minutes, hours, days, weeks, and
// YYYY-MM-DD[THH:MM[:SS]] in local time.
func beginTime(s string, now time.Time) (time.Time, error) {
	if rest, ok := strings.CutPrefix(s, "now+"); ok {
		i := strings.IndexFunc(rest, func(r rune) bool { return r < '0' || r > '9' })
		if i < 0 {
			i = len(rest)
		}
		n, err := strconv.Atoi(rest[:i])
		if err != nil {
			return time.Time{}, fmt.Errorf("want now+N[seconds|minutes|hours|days|weeks]")
		}
		unit := map[string]time.Duration{"": time.Second, "s": time.Second, "sec": time.Second, "seconds": time.Second,
			"m": time.Minute, "min": time.Minute, "minutes": time.Minute, "h": time.Hour, "hour": time.Hour, "hours": time.Hour,
			"d": 24 * time.Hour, "day": 24 * time.Hour, "days": 24 * time.Hour, "w": 7 * 24 * time.Hour, "week": 7 * 24 * time.Hour, "weeks": 7 * 24 * time.Hour}
		u, ok := unit[rest[i:]]
		if !ok {
			return time.Time{}, fmt.Errorf("unknown unit %q", rest[i:])
		}
		return now.Add(time.Duration(n) * u), nil
	}
	for _, layout := range []string{"2006-01-02T15:04:05", "2006-01-02T15:04", "2006-01-02"} {
		if t, err := time.ParseInLocation(layout, s, time.Local); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("want now+N[unit] or YYYY-MM-DD[THH:MM[:SS]]")
}

func newDesc(req backends.JobRequest, script string, env []string) (desc, error) {
	d, err := restOptions(req, time.Now())
	if err != nil {
		return desc{}, err
	}
	d.req, d.script, d.env = req, script, env
	return d, nil
}

func (d desc) minutes() int64 {
	return int64((d.req.Walltime + time.Minute - 1) / time.Minute)
}

func (d desc) warnSeconds() int64 {
	return int64((d.req.WarnBefore + time.Second - 1) / time.Second)
}

func ptr[T any](v T) *T { return &v }

// strPtr is nil for an empty string (the server would take "" literally).
func strPtr(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func intPtr(v int) *int64 {
	if v <= 0 {
		return nil
	}
	n := int64(v)
	return &n
}

// stateItem is one entry of a jobs/state answer.
type stateItem struct {
	ID     string
	States []string
}

// v4x is what differs between v0.0.40, v0.0.41 and v0.0.42; the query
// logic on top of it is shared.
type v4x interface {
	jobsState(ctx context.Context, ids []string) ([]stateItem, error)
	// getJob returns found=false for a job the controller does not know.
	getJob(ctx context.Context, id string) (j job, found bool, err error)
	// listJobs reads the full records of the jobs updated within the last
	// window (every job when window is 0).
	listJobs(ctx context.Context, window time.Duration) ([]job, error)
	submitDesc(ctx context.Context, d desc) (backends.JobID, error)
	cancelJob(ctx context.Context, id string) error
	pingOnce(ctx context.Context) error
	nodeInfo(ctx context.Context, name string) ([]string, string, error)
	partitions(ctx context.Context) ([]backends.Partition, error)
}

// api4x implements api for v0.0.40+.
type api4x struct {
	v v4x
	// detail keeps the pending reasons and expected starts jobs/state
	// does not give (nil: none read).
	detail *liveDetail
}

func (a api4x) submit(ctx context.Context, req backends.JobRequest, script string, env []string) (backends.JobID, error) {
	d, err := newDesc(req, script, env)
	if err != nil {
		return "", err
	}
	return a.v.submitDesc(ctx, d)
}

// followUpWindow is how far back the follow-up read of ended jobs looks:
// jobs that ended earlier (nobody polled meanwhile) are read one by one.
const followUpWindow = 15 * time.Minute

// query asks jobs/state for every id in one request. jobs/state has no
// exit codes, so when some jobs have ended, ONE more request reads the full
// records of the jobs updated in the last minutes; a job that ended before
// that window is read by itself.
func (a api4x) query(ctx context.Context, ids []backends.JobID) (map[backends.JobID]backends.JobStatus, error) {
	out := map[backends.JobID]backends.JobStatus{}
	if len(ids) == 0 {
		return out, a.v.pingOnce(ctx)
	}
	strs := make([]string, 0, len(ids))
	elements := false
	for _, id := range ids {
		if _, err := strconv.ParseUint(string(id), 10, 64); err == nil {
			strs = append(strs, string(id))
		} else if strings.Contains(string(id), "_") {
			elements = true
		}
	}
	if elements {
		// jobs/state takes no element ids ("Unable to parse query") and
		// names a started element by its own job id: ONE read of the
		// full job list answers for every job and element, exit codes
		// included
		return a.fromList(ctx, ids)
	}
	items, err := a.v.jobsState(ctx, strs)
	if err != nil {
		return nil, err
	}
	var ended []backends.JobID
	for _, it := range items {
		if len(it.States) == 0 {
			continue
		}
		id := backends.JobID(it.ID)
		st := backends.JobStatus{ID: id, State: slurm.MapState(it.States[0], it.States[1:]...), Native: strings.Join(it.States, "+")}
		if st.State.Terminal() {
			ended = append(ended, id)
		}
		out[id] = st
	}
	a.pendingDetail(ctx, out)
	if len(ended) == 0 {
		return out, nil
	}
	recent, err := a.v.listJobs(ctx, followUpWindow)
	if err != nil {
		return nil, err
	}
	full := make(map[backends.JobID]job, len(recent))
	for _, j := range recent {
		full[backends.JobID(strconv.FormatInt(j.ID, 10))] = j
	}
	for _, id := range ended {
		j, found := full[id]
		if !found {
			if j, found, err = a.v.getJob(ctx, string(id)); err != nil {
				return nil, err
			}
		}
		if found {
			out[id] = j.status()
		}
	}
	return out, nil
}

func (a api4x) jobs(ctx context.Context) ([]job, error) { return a.v.listJobs(ctx, 0) }

// fromList answers a query from the full job list (one request).
func (a api4x) fromList(ctx context.Context, ids []backends.JobID) (map[backends.JobID]backends.JobStatus, error) {
	want := make(map[backends.JobID]bool, len(ids))
	for _, id := range ids {
		want[id] = true
	}
	all, err := a.v.listJobs(ctx, 0)
	if err != nil {
		return nil, err
	}
	out := map[backends.JobID]backends.JobStatus{}
	for _, j := range all {
		for _, st := range j.statuses() {
			if want[st.ID] {
				out[st.ID] = st
			}
		}
	}
	return out, nil
}

// updateSince is the update_time of a job list for the last window, in
// Slurm's relative time form: slurmrestd 24.11 refuses a unix timestamp
// on v0.0.40 and v0.0.41 ("Parsing of 1795740744 for timestamp failed",
// HTTP 422) and takes "now-15minutes" on every version.
func updateSince(window time.Duration) string {
	return fmt.Sprintf("now-%dminutes", int((window+time.Minute-1)/time.Minute))
}

func (a api4x) cancel(ctx context.Context, id backends.JobID) error {
	return a.v.cancelJob(ctx, string(id))
}
func (a api4x) ping(ctx context.Context) error { return a.v.pingOnce(ctx) }
func (a api4x) partitions(ctx context.Context) ([]backends.Partition, error) {
	return a.v.partitions(ctx)
}
func (a api4x) node(ctx context.Context, name string) ([]string, string, error) {
	return a.v.nodeInfo(ctx, name)
}

// cancelAnswer reads the answer to a cancel: a job Slurm does not know
// (a JSON 404, or error 2017) or one that has already ended (2021) needs
// no cancel; any other failure is an error, ErrUnavailable unless Slurm
// refused for good (answerError), so the cancel is issued again.
func cancelAnswer(t *transport, id string, status int, body []byte) error {
	if status == http.StatusOK || unknownJob(status, body) {
		return nil
	}
	if num, _ := slurmErrorOf(body); num == 2017 || num == 2021 {
		return nil
	}
	return t.answerError("cancel job "+id, status, body, false)
}

// cancelStatus reads one entry of a 200 cancel answer's per-job status
// (v0.0.41+): 0, 2017 (unknown job) and 2021 (already ended) are fine;
// a definite refusal (access denied) is an error of its own; anything
// else, known or not, is ErrUnavailable.
func cancelStatus(t *transport, id string, code int64, text string) error {
	switch {
	case code == 0 || code == 2017 || code == 2021:
		return nil
	case slurm.Refused(int(code)):
		return &answerErr{err: fmt.Errorf("cancel job %s: slurmctld refused: %s (Slurm error %d)", id, text, code), status: http.StatusOK, num: int(code)}
	}
	return fmt.Errorf("%w: cancel job %s: slurmrestd at %s answered: %s (Slurm error %d)", backends.ErrUnavailable, id, t.display, text, code)
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
