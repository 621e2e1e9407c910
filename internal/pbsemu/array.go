package pbsemu

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Job arrays, after OpenPBS 23.06 (src/server/array_func.c, req_stat.c,
// stat_job.c, req_delete.c, svr_jobfunc.c; capture 13):
//
//   - qsub -J X-Y[:Z][%N] makes one job, the parent "17[].pbshost", state Q.
//     Its queued subjobs exist only as indices (array_indices_remaining).
//   - When the scheduler runs subjob 17[5].pbshost, the server creates it
//     as a job of its own, copied from the parent, and the parent becomes B
//     (substate 70, comment "Job Array Began at ...", stime).
//   - A subjob that ends becomes X (expired) with its usual substate
//     (92/93/91) while the array lives, and F once the whole array is F.
//   - A subjob that has no job of its own (still queued, deleted while
//     queued, or purged) is shown with the parent's attributes up to
//     "array" and its own state (status_subjob).

// maxArraySize is the server attribute max_array_size (PBS_MAX_ARRAY_JOB_DFL).
const maxArraySize = 10000

// ArrayInfo is the array part of a job array's parent (the ajinfo_t of
// OpenPBS), persisted in the parent's job.json.
type ArrayInfo struct {
	Submitted string `json:"submitted"` // array_indices_submitted, as given to -J (without %N)
	Start     int    `json:"start"`
	End       int    `json:"end"`
	Step      int    `json:"step"`
	Count     int    `json:"count"`
	MaxRun    *int   `json:"max_run,omitempty"` // max_run_subjobs (-J ...%N)
	// Remaining is array_indices_remaining: the indices still queued, in
	// OpenPBS's range form ("3", "0-5,7-199", "" when none).
	Remaining    string `json:"remaining"`
	Terminated   bool   `json:"terminated,omitempty"`    // deleted by qdel (ji_terminated)
	PurgeHistory bool   `json:"purge_history,omitempty"` // qdel -x: no history once finished

	queued  []bool       // by position (index-Start)/Step
	nQueued int          // number of true entries of queued
	first   int          // no position below it is queued
	subjobs map[int]*Job // subjobs with a job of their own, by index
	active  map[int]*Job // those of them in R or E
}

func newArrayInfo(submitted string, start, end, step int, maxRun *int) *ArrayInfo {
	a := &ArrayInfo{Submitted: submitted, Start: start, End: end, Step: step,
		Count: (end-start)/step + 1, MaxRun: maxRun}
	a.queued = make([]bool, a.Count)
	for i := range a.queued {
		a.queued[i] = true
	}
	a.nQueued = a.Count
	a.subjobs, a.active = map[int]*Job{}, map[int]*Job{}
	a.Remaining = a.remainingRange()
	return a
}

// pos returns the position of an index, false if it is not one of the
// array's indices (get_subjob_and_state: out of range or off the step).
func (a *ArrayInfo) pos(idx int) (int, bool) {
	if idx < a.Start || idx > a.End || (idx-a.Start)%a.Step != 0 {
		return 0, false
	}
	return (idx - a.Start) / a.Step, true
}

func (a *ArrayInfo) index(pos int) int { return a.Start + pos*a.Step }

func (a *ArrayInfo) isQueued(idx int) bool {
	p, ok := a.pos(idx)
	return ok && a.queued[p]
}

func (a *ArrayInfo) unqueue(idx int) {
	if p, ok := a.pos(idx); ok && a.queued[p] {
		a.queued[p] = false
		a.nQueued--
		a.Remaining = a.remainingRange()
	}
}

func (a *ArrayInfo) unqueueAll() {
	for i := range a.queued {
		a.queued[i] = false
	}
	a.nQueued = 0
	a.Remaining = ""
}

// requeue puts an index back (a subjob that could not be started).
func (a *ArrayInfo) requeue(idx int) {
	if p, ok := a.pos(idx); ok && !a.queued[p] {
		a.queued[p] = true
		a.nQueued++
		a.first = min(a.first, p)
		a.Remaining = a.remainingRange()
	}
}

// nextQueued is the lowest queued index (subjobs run in index order).
func (a *ArrayInfo) nextQueued() (int, bool) {
	for p := a.first; p < len(a.queued); p++ {
		if a.queued[p] {
			a.first = p
			return a.index(p), true
		}
	}
	a.first = len(a.queued)
	return 0, false
}

// remainingRange prints the queued indices like range_to_str: runs of
// consecutive indices as "X-Y" (":Z" with a step), single ones as "X".
func (a *ArrayInfo) remainingRange() string {
	var parts []string
	for p := 0; p < len(a.queued); {
		if !a.queued[p] {
			p++
			continue
		}
		q := p
		for q+1 < len(a.queued) && a.queued[q+1] {
			q++
		}
		s := strconv.Itoa(a.index(p))
		if q > p {
			s += "-" + strconv.Itoa(a.index(q))
			if a.Step > 1 {
				s += ":" + strconv.Itoa(a.Step)
			}
		}
		parts = append(parts, s)
		p = q + 1
	}
	return strings.Join(parts, ",")
}

// remaining is the attribute value: "-" once nothing is queued.
func (a *ArrayInfo) remaining() string {
	if a.Remaining == "" {
		return "-"
	}
	return a.Remaining
}

// restore rebuilds the queued set from Remaining (after a server restart).
func (a *ArrayInfo) restore() {
	a.queued = make([]bool, a.Count)
	a.nQueued, a.first = 0, 0
	for _, r := range parseIndexList(a.Remaining) {
		for i := r.start; i <= r.end; i += r.step {
			if p, ok := a.pos(i); ok && !a.queued[p] {
				a.queued[p] = true
				a.nQueued++
			}
		}
	}
	a.subjobs, a.active = map[int]*Job{}, map[int]*Job{}
}

// runningSubjobs counts the subjobs that hold resources or still count
// against max_run_subjobs (R and E).
func (a *ArrayInfo) runningSubjobs() int { return len(a.active) }

// stateCount is array_state_count (update_subjob_state_ct). Once the array
// is F, the subjobs that have a job of their own moved from Expired to
// Finished, which is not printed (capture 13: "Expired:0").
func (a *ArrayInfo) stateCount(parent *Job) string {
	running, exiting := 0, 0
	for _, sj := range a.active {
		if sj.State == "E" {
			exiting++
		} else {
			running++
		}
	}
	expired := a.Count - a.nQueued - running - exiting
	if parent.finished() {
		expired = a.Count - a.nQueued - len(a.subjobs)
	}
	return "Queued:" + strconv.Itoa(a.nQueued) + " Running:" + strconv.Itoa(running) +
		" Exiting:" + strconv.Itoa(exiting) + " Expired:" + strconv.Itoa(expired)
}

// sortedSubjobs returns the subjobs that have a job of their own, by index.
func (a *ArrayInfo) sortedSubjobs() []*Job {
	out := make([]*Job, 0, len(a.subjobs))
	for _, sj := range a.subjobs {
		out = append(out, sj)
	}
	sort.Slice(out, func(x, y int) bool { return out[x].ArrayIndex < out[y].ArrayIndex })
	return out
}

func (a *ArrayInfo) sortedActive() []*Job {
	out := make([]*Job, 0, len(a.active))
	for _, sj := range a.active {
		out = append(out, sj)
	}
	sort.Slice(out, func(x, y int) bool { return out[x].ArrayIndex < out[y].ArrayIndex })
	return out
}

// parseJRange checks a -J value like chk_Jrange (Libcmds): X-Y[:Z] with
// non-negative decimal X < Y and Z >= 1.
func parseJRange(s string) (start, end, step int, ok bool) {
	digits := func(t string) bool {
		if t == "" {
			return false
		}
		for i := 0; i < len(t); i++ {
			if t[i] < '0' || t[i] > '9' {
				return false
			}
		}
		return true
	}
	a, rest, found := strings.Cut(s, "-")
	if !found || !digits(a) {
		return 0, 0, 0, false
	}
	b, c, hasStep := strings.Cut(rest, ":")
	if !digits(b) || (hasStep && !digits(c)) {
		return 0, 0, 0, false
	}
	var err error
	if start, err = strconv.Atoi(a); err != nil || start > 1<<30 {
		return 0, 0, 0, false
	}
	if end, err = strconv.Atoi(b); err != nil || end > 1<<30 || start >= end {
		return 0, 0, 0, false
	}
	step = 1
	if hasStep {
		if step, err = strconv.Atoi(c); err != nil || step < 1 || step > 1<<30 {
			return 0, 0, 0, false
		}
	}
	return start, end, step, true
}

type indexRange struct{ start, end, step int }

// parseIndexList parses a subjob index list like parse_subjob_index:
// comma-separated "X", "X-Y" or "X-Y:Z". It returns nil if malformed.
func parseIndexList(s string) []indexRange {
	var out []indexRange
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		a, rest, isRange := strings.Cut(part, "-")
		start, err := strconv.Atoi(strings.TrimSpace(a))
		if err != nil || start < 0 {
			return nil
		}
		if !isRange {
			out = append(out, indexRange{start, start, 1})
			continue
		}
		b, c, hasStep := strings.Cut(rest, ":")
		end, err := strconv.Atoi(strings.TrimSpace(b))
		if err != nil {
			return nil
		}
		step := 1
		if hasStep {
			if step, err = strconv.Atoi(strings.TrimSpace(c)); err != nil {
				return nil
			}
		}
		if start >= end || step < 1 {
			return nil
		}
		out = append(out, indexRange{start, end, step})
	}
	return out
}

// Kinds of job identifiers (is_job_array).
const (
	refNone  = iota // malformed, or no such job
	refJob          // a regular job: 17.pbshost
	refArray        // a job array: 17[].pbshost
	refSub          // one subjob: 17[5].pbshost
	refRange        // subjobs: 17[1-3].pbshost
)

// jobRef is a resolved job identifier.
type jobRef struct {
	kind int
	job  *Job   // the regular job or the array's parent (nil: unknown)
	idx  int    // refSub
	list string // refRange: the index list
	full string // the id as messages print it (server name added)
}

// resolve resolves a job id operand: "3", "3.pbshost", "17[]", "17[5].pbshost",
// "17[1-3]". Like find_job, "17.pbshost" does not find the array 17[].
func (s *server) resolve(id string) jobRef {
	head, srv, _ := strings.Cut(id, ".")
	r := jobRef{full: id}
	if srv == "" {
		r.full = head + "." + s.cfg.ServerName
	}
	if srv != "" && srv != s.cfg.ServerName && !strings.HasPrefix(srv, s.cfg.ServerName+".") {
		return r
	}
	seqStr, inner, bracket := strings.Cut(head, "[")
	seq, err := strconv.Atoi(seqStr)
	if err != nil || seq < 0 {
		return r
	}
	j := s.jobs[seq]
	if !bracket {
		if j != nil && j.Array == nil {
			r.kind, r.job = refJob, j
		}
		return r
	}
	inner, closed := strings.CutSuffix(inner, "]")
	if !closed || j == nil || j.Array == nil {
		return r
	}
	r.job = j
	switch {
	case inner == "":
		r.kind = refArray
	case strings.IndexFunc(inner, func(c rune) bool { return c < '0' || c > '9' }) < 0:
		r.kind = refSub
		r.idx, err = strconv.Atoi(inner)
		if err != nil {
			r.idx = -1
		}
	default:
		k := 0
		for k < len(inner) && inner[k] >= '0' && inner[k] <= '9' {
			k++
		}
		if k < len(inner) && (inner[k] == '-' || inner[k] == ',') {
			r.kind, r.list = refRange, inner
		} else {
			r.kind, r.idx = refSub, -1 // not an index: Unknown Job Id
		}
	}
	return r
}

// subjobID is the id of subjob idx of the array parent.
func subjobID(parent *Job, idx int) string {
	seq, rest, _ := strings.Cut(parent.ID, "[")
	return seq + "[" + strconv.Itoa(idx) + rest
}

// dirOf is the state directory of a job: jobs/<seq> for regular jobs and
// array parents, jobs/<seq>/sub/<index> for subjobs.
func (s *server) dirOf(j *Job) string {
	if j.isSubjob() {
		return s.inst.path("jobs", strconv.Itoa(j.Seq), "sub", strconv.Itoa(j.ArrayIndex))
	}
	return s.jobDir(j.Seq)
}

// momKey names a job to "pbsemu mom": "17" or "17[5]".
func momKey(j *Job) string {
	if j.isSubjob() {
		return strconv.Itoa(j.Seq) + "[" + strconv.Itoa(j.ArrayIndex) + "]"
	}
	return strconv.Itoa(j.Seq)
}

// momDir is the directory of the job that "pbsemu mom KEY" supervises.
func (in Instance) momDir(key string) (string, error) {
	seqStr, idx, sub := strings.Cut(key, "[")
	if _, err := strconv.Atoi(seqStr); err != nil {
		return "", err
	}
	if !sub {
		return in.path("jobs", seqStr), nil
	}
	idx, ok := strings.CutSuffix(idx, "]")
	if _, err := strconv.Atoi(idx); err != nil || !ok {
		return "", fmt.Errorf("bad job key %q", key)
	}
	return in.path("jobs", seqStr, "sub", idx), nil
}

// loadSubjobs reads the subjobs of an array parent from jobs/<seq>/sub.
func (s *server) loadSubjobs(p *Job) {
	p.Array.restore()
	dir := filepath.Join(s.jobDir(p.Seq), "sub")
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name(), "job.json"))
		if err != nil {
			continue
		}
		var sj Job
		if err := json.Unmarshal(b, &sj); err != nil || !sj.isSubjob() {
			s.log.Warn("skipping unreadable subjob", "dir", e.Name(), "err", err)
			continue
		}
		p.Array.subjobs[sj.ArrayIndex] = &sj
		if sj.State == "R" || sj.State == "E" {
			p.Array.active[sj.ArrayIndex] = &sj
		}
		// a subjob saved just before its parent: not queued any more
		p.Array.unqueue(sj.ArrayIndex)
	}
}

// parentOf returns the array parent of a subjob.
func (s *server) parentOf(sj *Job) *Job {
	if p := s.jobs[sj.Seq]; p != nil && p.Array != nil {
		return p
	}
	return nil
}

// newSubjob creates subjob idx from its parent (create_subjob): the
// attributes of attrs_to_copy, array_id and array_index, and ^array_index^
// replaced in Output_Path and Error_Path.
func (s *server) newSubjob(p *Job, idx int, now time.Time) *Job {
	id := subjobID(p, idx)
	ix := strconv.Itoa(idx)
	path := func(v, suffix string) string {
		v = strings.ReplaceAll(v, "^array_index^", ix)
		// a directory gets <subjob id>.OU/.ER, as for a single job
		host, local, _ := strings.Cut(v, ":")
		if st, err := os.Stat(local); (err == nil && st.IsDir()) || strings.HasSuffix(local, "/") {
			v = host + ":" + filepath.Join(local, id+"."+suffix)
		}
		return v
	}
	return &Job{
		Seq: p.Seq, ID: id, ArrayID: p.ID, ArrayIndex: idx,
		Name: p.Name, User: p.User, UID: p.UID, GID: p.GID, Owner: p.Owner, Queue: p.Queue,
		Account: p.Account, Project: p.Project, State: "Q", Substate: subQueued, HoldTypes: "n",
		JoinPath: p.JoinPath, KeepFiles: p.KeepFiles, MailPoints: p.MailPoints, MailUsers: p.MailUsers,
		Priority: p.Priority, Rerunable: p.Rerunable, OutputPath: path(p.OutputPath, "OU"),
		ErrorPath: path(p.ErrorPath, "ER"), ShellPath: p.ShellPath, Umask: p.Umask, Resources: p.Resources,
		VariableList: p.VariableList, SubmitHost: p.SubmitHost, Workdir: p.Workdir,
		Home: p.Home, Shell: p.Shell, Executable: p.Executable, Args: p.Args, QdelExit: p.QdelExit,
		Ctime: p.Ctime, Qtime: p.Qtime, Etime: p.Etime, Mtime: now.Unix(),
	}
}

// startSubjob runs the next queued subjob of an array.
func (s *server) startSubjob(p *Job, busy map[int]bool, now time.Time) error {
	ar := p.Array
	idx, ok := ar.nextQueued()
	if !ok {
		return nil
	}
	sj := s.newSubjob(p, idx, now)
	ar.unqueue(idx)
	ar.subjobs[idx], ar.active[idx] = sj, sj
	if err := s.start(sj, busy, now); err != nil {
		delete(ar.subjobs, idx)
		delete(ar.active, idx)
		_ = os.RemoveAll(s.dirOf(sj))
		ar.requeue(idx)
		return err
	}
	// complete_running: the first subjob marks the array Begun.
	if p.State == "Q" || (p.State == "B" && p.Stime == 0) {
		p.State, p.Substate = "B", subBegun
		p.Stime = now.Unix()
		p.Comment = "Job Array Began at " + now.Format("Mon Jan 02 at 15:04")
	}
	p.Mtime = now.Unix()
	s.save(p)
	return nil
}

// parentExitStatus is how update_sj_parent maps a subjob's Exit_status
// onto the parent: 0 stays 0, above 0 gives 1, below 0 gives 2.
func parentExitStatus(e int) int {
	switch {
	case e > 0:
		return 1
	case e < 0:
		return 2
	}
	return 0
}

// noteSubjob updates the parent from a subjob that changed state
// (update_sj_parent): the parent's Exit_status follows the last subjob
// with one, Stageout_status takes a positive value unless it is 0.
func noteSubjob(p, sj *Job) {
	if sj.ExitStatus != nil {
		e := parentExitStatus(*sj.ExitStatus)
		p.ExitStatus = &e
	}
	if sj.Stageout != nil && *sj.Stageout > 0 && (p.Stageout == nil || *p.Stageout != 0) {
		v := *sj.Stageout
		p.Stageout = &v
	}
}

// subjobFinished runs when a subjob has ended (finish has set its state
// to X): the parent notes it, history off purges the subjob, and the
// array ends when nothing is queued or active any more.
func (s *server) subjobFinished(sj *Job, now time.Time) {
	p := s.parentOf(sj)
	if p == nil {
		return
	}
	delete(p.Array.active, sj.ArrayIndex)
	noteSubjob(p, sj)
	p.Mtime = now.Unix()
	if !s.cfg.historyEnabled() {
		s.purgeSubjob(p, sj)
	}
	if !s.checkArrayDone(p, now) {
		s.save(p)
	}
}

func (s *server) purgeSubjob(p *Job, sj *Job) {
	delete(p.Array.subjobs, sj.ArrayIndex)
	delete(p.Array.active, sj.ArrayIndex)
	_ = os.RemoveAll(s.dirOf(sj))
}

// checkArrayDone ends the array once no subjob is queued, running or
// exiting (chk_array_doneness). It reports whether it did.
func (s *server) checkArrayDone(p *Job, now time.Time) bool {
	ar := p.Array
	if p.finished() || ar.nQueued > 0 || len(ar.active) > 0 {
		return false
	}
	t := now.Unix()
	// svr_setjob_histinfo: terminated if deleted, else the substate of
	// the first failed or terminated subjob, else finished.
	sub := subFinished
	if ar.Terminated {
		sub = subTerminated
	} else {
		for _, sj := range ar.sortedSubjobs() {
			if sj.Substate == subFailed || sj.Substate == subTerminated {
				sub = sj.Substate
				break
			}
		}
	}
	p.State, p.Substate = "F", sub
	// update_job_finish_comment (only when there is a comment)
	if p.Comment != "" {
		switch sub {
		case subFinished:
			p.Comment += " and finished"
		case subFailed:
			p.Comment += " and failed"
		case subTerminated:
			if !strings.Contains(p.Comment, "terminated") {
				p.Comment += " and terminated"
			}
		}
	}
	p.ObitTime, p.Mtime, p.HistoryTime = t, t, t
	// svr_histjob_update: every subjob that has a job of its own goes from
	// X to F, and the parent notes each, in index order.
	for _, sj := range ar.sortedSubjobs() {
		noteSubjob(p, sj)
		if sj.State == "X" {
			sj.State, sj.Mtime = "F", t
			s.save(sj)
		}
	}
	s.log.Info("job array finished", "id", p.ID, "substate", sub)
	s.save(p)
	s.releaseDependents(p, now)
	if !s.cfg.historyEnabled() || ar.PurgeHistory {
		s.purge(p)
	}
	return true
}

// fakeSubjob is the status of a subjob that has no job of its own
// (status_subjob): the parent's attributes before "array", with the
// subjob's state; a finished one gets the comment "Subjob finished". With
// substate < 0 the parent's substate stays (an explicit subjob id); qstat
// -t's expansion of queued subjobs (dec_reply.c) sets Q and 10.
func fakeSubjob(parentAttrs []Attr, state string, substate int) []Attr {
	out := make([]Attr, 0, len(parentAttrs)+1)
	hasComment := false
	for _, a := range parentAttrs {
		if a.Name == "array" {
			break
		}
		switch a.Name {
		case "job_state":
			a.Value = state
		case "substate":
			if substate >= 0 {
				a.Value = strconv.Itoa(substate)
			}
		case "comment":
			hasComment = true
			if state == "X" || state == "F" {
				a.Value = "Subjob finished"
			}
		}
		out = append(out, a)
	}
	if !hasComment && (state == "X" || state == "F") {
		// the comment attribute sits after Variable_List (and umask)
		at := len(out)
		for i, a := range out {
			if a.Name == "Variable_List" || a.Name == "umask" {
				at = i + 1
			}
		}
		out = append(out[:at], append([]Attr{{Name: "comment", Value: "Subjob finished"}}, out[at:]...)...)
	}
	return out
}

// subjobStatus is the status of subjob idx, nil if idx is not an index of
// the array. expand marks qstat -t's listing.
func (s *server) subjobStatus(p *Job, parentAttrs []Attr, idx int, expand bool, now time.Time) []Attr {
	ar := p.Array
	if _, ok := ar.pos(idx); !ok {
		return nil
	}
	if sj := ar.subjobs[idx]; sj != nil {
		return sj.Attrs(&s.cfg, now)
	}
	if ar.isQueued(idx) {
		if expand {
			return fakeSubjob(parentAttrs, "Q", subQueued)
		}
		return fakeSubjob(parentAttrs, "Q", -1)
	}
	if p.finished() {
		return fakeSubjob(parentAttrs, "F", -1)
	}
	return fakeSubjob(parentAttrs, "X", -1)
}

// arrayEntries lists the parent and, for qstat -t, all its subjobs in
// index order.
func (s *server) arrayEntries(p *Job, subjobs bool, now time.Time) []StatEntry {
	pa := p.Attrs(&s.cfg, now)
	out := []StatEntry{{ID: p.ID, Attrs: pa}}
	if !subjobs {
		return out
	}
	ar := p.Array
	for pos := 0; pos < ar.Count; pos++ {
		idx := ar.index(pos)
		out = append(out, StatEntry{ID: subjobID(p, idx), Attrs: s.subjobStatus(p, pa, idx, true, now)})
	}
	return out
}

// statSubjobs answers qstat for one subjob or a range of them.
func (s *server) statSubjobs(r jobRef, history bool, now time.Time) []StatEntry {
	p := r.job
	if p.finished() && !history && s.cfg.historyEnabled() {
		return []StatEntry{{ID: r.full, Errno: pbseHistJobID}}
	}
	pa := p.Attrs(&s.cfg, now)
	if r.kind == refSub {
		a := s.subjobStatus(p, pa, r.idx, false, now)
		if a == nil {
			return []StatEntry{{ID: r.full, Errno: pbseUnkJobID}}
		}
		return []StatEntry{{ID: subjobID(p, r.idx), Attrs: a}}
	}
	ranges := parseIndexList(r.list)
	if ranges == nil {
		return []StatEntry{{ID: r.full, Errno: pbseIvalReq}}
	}
	var out []StatEntry
	for _, rg := range ranges {
		for i := rg.start; i <= rg.end; i += rg.step {
			a := s.subjobStatus(p, pa, i, false, now)
			if a == nil {
				return []StatEntry{{ID: r.full, Errno: pbseUnkJobID}}
			}
			out = append(out, StatEntry{ID: subjobID(p, i), Attrs: a})
		}
	}
	return out
}

// delArray is qdel of a whole array: running subjobs are killed, queued
// ones expire without running, finished ones lose their history, and the
// parent ends once the last running subjob has (req_deletejob).
func (s *server) delArray(p *Job, by string, force, delHist bool, now time.Time) {
	ar := p.Array
	if delHist {
		ar.PurgeHistory = true
	}
	p.Deleted, p.DeletedBy = true, by
	killed := false
	for _, sj := range ar.sortedSubjobs() {
		switch sj.State {
		case "R":
			s.delRunning(sj, by, force, now)
			killed = true
		case "X":
			s.purgeSubjob(p, sj)
		}
	}
	// Without running subjobs the parent itself goes through
	// req_deletejob2 (ji_terminated: F/91). Otherwise it ends when they
	// have, with the substate of the first failed or terminated one.
	ar.Terminated = !killed
	ar.unqueueAll()
	p.Mtime = now.Unix()
	if !s.checkArrayDone(p, now) {
		s.save(p)
	}
}

// delSubjobs is qdel of one subjob or a range of them.
func (s *server) delSubjobs(r jobRef, by string, force, delHist bool, now time.Time) StatEntry {
	p := r.job
	ar := p.Array
	if p.finished() {
		if delHist {
			return StatEntry{ID: r.full, Errno: pbseNoHistArraySubjob}
		}
		return StatEntry{ID: r.full, Errno: pbseHistJobID}
	}
	state := func(idx int) (string, *Job) {
		if _, ok := ar.pos(idx); !ok {
			return "", nil
		}
		if sj := ar.subjobs[idx]; sj != nil {
			return sj.State, sj
		}
		if ar.isQueued(idx) {
			return "Q", nil
		}
		return "X", nil
	}
	defer func() {
		if p.Array != nil && !s.checkArrayDone(p, now) {
			s.save(p)
		}
	}()
	if r.kind == refSub {
		st, sj := state(r.idx)
		switch {
		case st == "":
			return StatEntry{ID: r.full, Errno: pbseIvalReq}
		case st == "E" && !force:
			return StatEntry{ID: r.full, Errno: pbseBadState}
		case st == "X":
			return StatEntry{ID: r.full, Errno: pbseNoHistArraySubjob}
		case sj != nil:
			if st == "R" {
				s.delRunning(sj, by, force, now)
			}
		default:
			ar.unqueue(r.idx)
			p.Mtime = now.Unix()
		}
		return StatEntry{ID: r.full}
	}
	ranges := parseIndexList(r.list)
	if ranges == nil {
		return StatEntry{ID: r.full, Errno: pbseIvalReq}
	}
	for _, rg := range ranges {
		if rg.start < ar.Start || rg.start > ar.End {
			return StatEntry{ID: r.full, Errno: pbseUnkJobID}
		}
		for i := rg.start; i <= rg.end; i += rg.step {
			st, sj := state(i)
			switch {
			case st == "" || (st == "E" && !force):
			case sj != nil && st == "X":
				s.purgeSubjob(p, sj)
			case sj != nil && st == "R":
				s.delRunning(sj, by, force, now)
			case st == "Q":
				ar.unqueue(i)
				p.Mtime = now.Unix()
			}
		}
	}
	return StatEntry{ID: r.full}
}
