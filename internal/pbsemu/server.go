package pbsemu

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// serverState is $PBSEMU_HOME/server.json.
type serverState struct {
	V       int `json:"v"`
	NextSeq int `json:"next_seq"`
}

// maxJobSequenceID is the server attribute max_job_sequence_id.
const maxJobSequenceID = 9999999

type server struct {
	inst     Instance
	log      *slog.Logger
	mu       sync.Mutex
	cfg      Config
	cfgStamp time.Time
	jobs     map[int]*Job
	nextSeq  int
	ln       net.Listener
	stop     chan bool // true: kill jobs
	self     string    // path of the pbsemu binary, for supervisors
}

func (s *server) jobDir(seq int) string { return s.inst.path("jobs", strconv.Itoa(seq)) }

// RunServer runs the emulated pbs_server in the foreground until it is told
// to stop (SIGTERM, SIGINT or a shutdown request). Running jobs are not
// touched when the server stops, as with pbs_server: their supervisors
// carry on and the next server start picks up their outcome.
func RunServer(in Instance) error {
	for _, d := range []string{"jobs", "spool", "aux", "tmp", "undelivered"} {
		if err := os.MkdirAll(in.path(d), 0o755); err != nil {
			return err
		}
	}
	lock, err := os.OpenFile(in.path("server.lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		return fmt.Errorf("another pbsemu server holds %s", in.path("server.lock"))
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	logf, err := os.OpenFile(in.path("server.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	s := &server{
		inst: in,
		log:  slog.New(slog.NewTextHandler(logf, nil)),
		jobs: map[int]*Job{},
		stop: make(chan bool, 1),
		self: self,
	}
	if err := s.reloadConfig(true); err != nil {
		return err
	}
	if err := s.load(); err != nil {
		return err
	}
	sock := in.SocketPath()
	_ = os.Remove(sock)
	ln, err := net.Listen("unix", sock)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", sock, err)
	}
	s.ln = ln
	if err := writeFileAtomic(in.path("server.pid"), []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		return err
	}
	s.log.Info("server started", "pid", os.Getpid(), "socket", sock, "server_name", s.cfg.ServerName)

	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP) // caught, not ignored: supervisors must not inherit SIG_IGN
	go func() {
		for range hup {
		}
	}()
	go s.acceptLoop()

	ticker := time.NewTicker(s.cfg.PollInterval.D())
	defer ticker.Stop()
	killJobs := false
loop:
	for {
		select {
		case <-sigs:
			break loop
		case killJobs = <-s.stop:
			break loop
		case <-ticker.C:
			s.tick()
			if s.cfg.OwnerPID != 0 && !pidAlive(s.cfg.OwnerPID) {
				s.log.Info("owner process gone, shutting down", "owner_pid", s.cfg.OwnerPID)
				killJobs = true
				break loop
			}
		}
	}
	ln.Close()
	_ = os.Remove(sock)
	if killJobs {
		s.killAllJobs()
	}
	_ = os.Remove(in.path("server.pid"))
	s.log.Info("server stopped", "kill_jobs", killJobs)
	return nil
}

func (s *server) reloadConfig(force bool) error {
	st, err := os.Stat(s.inst.path(ConfigFile))
	var stamp time.Time
	if err == nil {
		stamp = st.ModTime()
	}
	if !force && stamp.Equal(s.cfgStamp) {
		return nil
	}
	cfg, err := s.inst.LoadConfig()
	if err != nil {
		return err
	}
	s.cfg, s.cfgStamp = cfg, stamp
	return nil
}

func (s *server) load() error {
	var st serverState
	if b, err := os.ReadFile(s.inst.path("server.json")); err == nil {
		if err := json.Unmarshal(b, &st); err != nil {
			return fmt.Errorf("parse server.json: %w", err)
		}
	}
	s.nextSeq = st.NextSeq
	ents, err := os.ReadDir(s.inst.path("jobs"))
	if err != nil {
		return err
	}
	for _, e := range ents {
		seq, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join(s.jobDir(seq), "job.json"))
		if err != nil {
			continue
		}
		var j Job
		if err := json.Unmarshal(b, &j); err != nil {
			s.log.Warn("skipping unreadable job", "seq", seq, "err", err)
			continue
		}
		s.jobs[seq] = &j
		if j.Array != nil {
			s.loadSubjobs(&j)
		}
	}
	return nil
}

func (s *server) saveState() {
	b, _ := json.Marshal(serverState{V: 1, NextSeq: s.nextSeq})
	if err := writeFileAtomic(s.inst.path("server.json"), b, 0o644); err != nil {
		s.log.Error("save server state", "err", err)
	}
}

func (s *server) save(j *Job) {
	j.V = jobFormatVersion
	b, _ := json.MarshalIndent(j, "", " ")
	dir := s.dirOf(j)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		s.log.Error("save job", "id", j.ID, "err", err)
		return
	}
	if err := writeFileAtomic(filepath.Join(dir, "job.json"), b, 0o644); err != nil {
		s.log.Error("save job", "id", j.ID, "err", err)
	}
}

func (s *server) purge(j *Job) {
	delete(s.jobs, j.Seq)
	_ = os.RemoveAll(s.jobDir(j.Seq))
}

func (s *server) acceptLoop() {
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		go s.serve(c)
	}
}

func (s *server) serve(c net.Conn) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	line, err := bufio.NewReader(c).ReadBytes('\n')
	if err != nil {
		return
	}
	var req Request
	var resp Response
	if err := json.Unmarshal(line, &req); err != nil {
		resp = Response{Errno: pbseSystem, Msg: "bad request"}
	} else {
		resp = s.handle(req)
	}
	resp.V = protoVersion
	b, _ := json.Marshal(resp)
	_, _ = c.Write(append(b, '\n'))
}

func (s *server) handle(req Request) Response {
	if req.Op == "shutdown" {
		select {
		case s.stop <- req.On:
		default:
		}
		return Response{}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	_ = s.reloadConfig(false)
	now := time.Now()
	resp := Response{Server: s.cfg.ServerName}
	switch req.Op {
	case "submit":
		if req.Submit == nil {
			return Response{Errno: pbseSystem, Msg: "empty submit"}
		}
		id, errno, msg := s.submit(req.Submit, now)
		resp.ID, resp.Errno, resp.Msg = id, errno, msg
		if errno == 0 {
			s.schedule(now)
		}
	case "stat":
		resp.Entries = s.stat(req, now)
	case "delete":
		for _, id := range req.IDs {
			resp.Entries = append(resp.Entries, s.del(id, req.User, req.Force, req.DelHist, now))
		}
	case "release":
		for _, id := range req.IDs {
			resp.Entries = append(resp.Entries, s.release(id, now))
		}
		s.schedule(now)
	case "server":
		resp.Attrs = s.serverAttrs()
		resp.Queues = s.queueStats()
	case "nodes":
		resp.Attrs = s.nodeAttrs()
	case "scheduling":
		s.cfg.Scheduling = boolp(req.On)
		_ = s.inst.WriteConfig(s.cfg)
		_ = s.reloadConfig(true)
	default:
		resp.Errno, resp.Msg = pbseSystem, "unknown request "+req.Op
	}
	return resp
}

// lookup resolves a job id operand ("3", "3.pbshost", "17[]") to a
// regular job or an array's parent, and the full id to print in messages.
func (s *server) lookup(id string) (*Job, string) {
	r := s.resolve(id)
	if r.kind == refJob || r.kind == refArray {
		return r.job, r.full
	}
	return nil, r.full
}

func (s *server) submit(r *SubmitRequest, now time.Time) (string, int, string) {
	cfg := &s.cfg
	if r.UID == 0 && !contains(cfg.ACLRoots, r.User) && !contains(cfg.ACLRoots, "root") {
		return "", pbseBadUser, pbseText(pbseBadUser)
	}
	qname := r.Queue
	if i := strings.IndexByte(qname, '@'); i >= 0 {
		qname = qname[:i]
	}
	if qname == "" {
		qname = cfg.DefaultQueue
	}
	q := cfg.queue(qname)
	if q == nil {
		return "", pbseUnkQue, pbseText(pbseUnkQue)
	}
	rr, rerr := resolveResources(r.Res, q.ResourcesDefault)
	if rerr != nil {
		return "", rerr.errno, rerr.msg
	}
	if exceedsLimits(rr, q.ResourcesMax) {
		return "", pbseExcQResc, pbseText(pbseExcQResc)
	}
	var array *ArrayInfo
	switch {
	case r.Array != "":
		start, end, step, ok := parseJRange(r.Array)
		if !ok {
			return "", pbseBadAtVal, pbseText(pbseBadAtVal) + " array_indices_submitted"
		}
		// setup_ajinfo: more subjobs than max_array_size
		if (end-start)/step+1 > maxArraySize {
			return "", pbseMaxArraySize, pbseText(pbseMaxArraySize)
		}
		array = newArrayInfo(r.Array, start, end, step, r.MaxRun)
	case r.MaxRun != nil:
		// action_max_run_subjobs
		return "", pbseNotArrayAttr, pbseText(pbseNotArrayAttr)
	}
	deps, errno, msg := s.parseDepend(r.Depend)
	if errno != 0 {
		return "", errno, msg
	}
	seq := s.nextSeq
	for s.jobs[seq] != nil {
		seq = (seq + 1) % (maxJobSequenceID + 1)
	}
	s.nextSeq = (seq + 1) % (maxJobSequenceID + 1)
	s.saveState()
	id := strconv.Itoa(seq) + "." + cfg.ServerName
	if array != nil {
		id = strconv.Itoa(seq) + "[]." + cfg.ServerName
	}
	host := cfg.SubmitHost
	t := now.Unix()
	j := &Job{
		Seq: seq, ID: id, Name: r.Name, User: r.User, UID: r.UID, GID: r.GID,
		Owner: r.User + "@" + host, Queue: qname, Account: r.Account,
		Project: "_pbs_project_default", HoldTypes: "n", JoinPath: "n",
		KeepFiles: "n", MailPoints: "a", Checkpoint: "u", Priority: r.Priority,
		Rerunable: r.Rerunable == nil || *r.Rerunable, MailUsers: r.MailUsers,
		ShellPath: r.ShellPath, Umask: r.Umask, Resources: rr,
		SubmitArgs: r.SubmitArgs, SubmitHost: host, Workdir: r.Cwd,
		Home: r.Home, Shell: r.Shell, Executable: r.Executable, Args: r.Args, QdelExit: r.QdelExit,
		Ctime: t, Qtime: t, Mtime: t, Array: array,
	}
	if cfg.HomeDir != "" {
		j.Home = cfg.HomeDir
	}
	if r.Project != "" {
		j.Project = r.Project
	}
	if r.Join != "" {
		j.JoinPath = r.Join
	}
	if r.Keep != "" {
		j.KeepFiles = r.Keep
	}
	if r.MailPoints != "" {
		j.MailPoints = r.MailPoints
	}
	if r.Checkpoint != "" {
		j.Checkpoint = r.Checkpoint
	}
	j.OutputPath = s.stdPath(r.OutputPath, r.Cwd, r.Name, "o", "OU", seq, id, array != nil)
	j.ErrorPath = s.stdPath(r.ErrorPath, r.Cwd, r.Name, "e", "ER", seq, id, array != nil)
	j.VariableList = append(append([]KeyVal{}, r.VarList...),
		KeyVal{"PBS_O_QUEUE", qname}, KeyVal{"PBS_O_HOST", host})
	if err := os.MkdirAll(s.jobDir(seq), 0o755); err != nil {
		return "", pbseSystem, "cannot create job directory: " + err.Error()
	}
	if r.Executable == "" {
		if err := os.WriteFile(filepath.Join(s.jobDir(seq), id+".SC"), []byte(r.Script), 0o700); err != nil {
			return "", pbseSystem, "cannot store job script: " + err.Error()
		}
	}
	if r.Hold {
		j.addHold('u')
	}
	var doomed bool
	for _, d := range deps {
		p, _ := s.lookup(d.JobID)
		d.JobID = p.ID
		if p.finished() {
			if depSatisfied(d.Type, p) {
				d.Done = true
			} else {
				doomed = true
			}
		}
		j.Depends = append(j.Depends, d)
		p.Depends = append(p.Depends, Dep{Type: "before" + strings.TrimPrefix(d.Type, "after"), JobID: id})
		p.Mtime = t
		s.save(p)
	}
	for _, d := range j.Depends {
		if !d.Done {
			j.addHold('s')
		}
	}
	switch {
	case j.HoldTypes != "n":
		j.State, j.Substate = "H", subHeld
		if !j.hasHold('u') {
			j.Substate = subDepHold
		}
	case r.ExecTime > t:
		j.ExecutionTime = r.ExecTime
		j.State, j.Substate = "W", subWaiting
	default:
		j.State, j.Substate, j.Etime = "Q", subQueued, t
	}
	if r.ExecTime > t {
		j.ExecutionTime = r.ExecTime
	}
	s.jobs[seq] = j
	if doomed {
		s.killDependent(j, now)
	}
	s.save(j)
	s.log.Info("job queued", "id", id, "state", j.State)
	return id, 0, ""
}

// stdPath computes Output_Path/Error_Path: the default <name>.o<seq> in
// the submit directory, or the given path (relative to it); a directory
// gets <seq>.<server>.OU inside it. An array's default is
// <name>.o<seq>.^array_index^ (default_std); a directory given to an array
// is resolved per subjob.
func (s *server) stdPath(given, cwd, name, letter, suffix string, seq int, id string, array bool) string {
	host := s.cfg.SubmitHost
	if given == "" {
		p := host + ":" + filepath.Join(cwd, name+"."+letter+strconv.Itoa(seq))
		if array {
			p += ".^array_index^"
		}
		return p
	}
	if h, p, ok := strings.Cut(given, ":"); ok && !strings.Contains(h, "/") {
		host, given = h, p
	}
	if !filepath.IsAbs(given) {
		given = filepath.Join(cwd, given)
	}
	if st, err := os.Stat(given); (err == nil && st.IsDir()) || strings.HasSuffix(given, "/") {
		if array {
			return host + ":" + strings.TrimSuffix(given, "/") + "/"
		}
		given = filepath.Join(given, id+"."+suffix)
	}
	return host + ":" + given
}

func (s *server) parseDepend(spec string) ([]Dep, int, string) {
	if spec == "" {
		return nil, 0, ""
	}
	var deps []Dep
	for _, part := range strings.Split(spec, ",") {
		typ, rest, ok := strings.Cut(part, ":")
		switch typ {
		case "afterok", "afternotok", "afterany":
		default:
			return nil, pbseBadDepend, pbseText(pbseBadDepend)
		}
		if !ok || rest == "" {
			return nil, pbseBadDepend, pbseText(pbseBadDepend)
		}
		for _, id := range strings.Split(rest, ":") {
			if i := strings.IndexByte(id, '@'); i >= 0 {
				id = id[:i]
			}
			p, full := s.lookup(id)
			if p == nil {
				return nil, pbseUnkJobID, pbseText(pbseUnkJobID) + " " + full
			}
			deps = append(deps, Dep{Type: typ, JobID: p.ID})
		}
	}
	return deps, 0, ""
}

func depSatisfied(typ string, parent *Job) bool {
	ran := parent.RunCount > 0 || parent.Array != nil // an array ran through its subjobs
	ok := ran && parent.ExitStatus != nil && *parent.ExitStatus == 0 && !parent.Deleted
	switch typ {
	case "afterok":
		return ok
	case "afternotok":
		return !ok
	}
	return true
}

// releaseDependents runs when parent reaches F: afterok children of a
// successful parent are released, children whose dependency can no longer
// be met are deleted by the server (F, substate 92, no Exit_status).
func (s *server) releaseDependents(parent *Job, now time.Time) {
	for _, pd := range parent.Depends {
		if !strings.HasPrefix(pd.Type, "before") {
			continue
		}
		child, _ := s.lookup(pd.JobID)
		if child == nil || child.finished() {
			continue
		}
		for i := range child.Depends {
			d := &child.Depends[i]
			if d.JobID != parent.ID || d.Done {
				continue
			}
			if !depSatisfied(d.Type, parent) {
				s.killDependent(child, now)
				break
			}
			d.Done = true
		}
		if child.finished() {
			continue
		}
		pending := false
		for _, d := range child.Depends {
			pending = pending || !d.Done
		}
		if !pending && child.hasHold('s') {
			child.removeHold('s')
			s.unhold(child, now)
		}
		s.save(child)
	}
}

// unhold moves a job whose holds are gone back to Q (or W).
func (s *server) unhold(j *Job, now time.Time) {
	if j.HoldTypes != "n" {
		if j.hasHold('u') {
			j.Substate = subHeld
		} else {
			j.Substate = subDepHold
		}
		return
	}
	j.Mtime = now.Unix()
	if j.ExecutionTime > now.Unix() {
		j.State, j.Substate = "W", subWaiting
		return
	}
	j.State, j.Substate, j.Etime = "Q", subQueued, now.Unix()
}

func (s *server) killDependent(j *Job, now time.Time) {
	if j.Array != nil {
		j.Array.unqueueAll()
	}
	j.State, j.Substate = "F", subFinished
	j.Mtime, j.HistoryTime = now.Unix(), now.Unix()
	s.log.Info("job deleted: dependency cannot be satisfied", "id", j.ID)
	s.save(j)
	s.releaseDependents(j, now)
	if !s.cfg.historyEnabled() {
		s.purge(j)
	}
}

// stat answers qstat: all jobs (req.IDs empty) or the given ones. With
// Subjobs (qstat -t) an array is followed by all its subjobs; ArraysOnly
// (qstat -J) keeps arrays only.
func (s *server) stat(req Request, now time.Time) []StatEntry {
	var out []StatEntry
	history := req.History
	if len(req.IDs) == 0 {
		for _, j := range sortedJobs(s.jobs) {
			if j.finished() && (!history || !s.cfg.historyEnabled()) {
				continue
			}
			if j.Array != nil {
				out = append(out, s.arrayEntries(j, req.Subjobs, now)...)
				continue
			}
			if !req.Arrays {
				out = append(out, StatEntry{ID: j.ID, Attrs: j.Attrs(&s.cfg, now)})
			}
		}
		return out
	}
	for _, id := range req.IDs {
		r := s.resolve(id)
		j := r.job
		switch {
		case j == nil:
			out = append(out, StatEntry{ID: r.full, Errno: pbseUnkJobID})
		case r.kind == refSub || r.kind == refRange:
			out = append(out, s.statSubjobs(r, history, now)...)
		case j.finished() && !history:
			out = append(out, StatEntry{ID: r.full, Errno: pbseHistJobID})
		case j.Array != nil:
			out = append(out, s.arrayEntries(j, req.Subjobs, now)...)
		default:
			out = append(out, StatEntry{ID: j.ID, Attrs: j.Attrs(&s.cfg, now)})
		}
	}
	return out
}

func (s *server) del(id, user string, force, delHist bool, now time.Time) StatEntry {
	r := s.resolve(id)
	j, full := r.job, r.full
	if j == nil {
		return StatEntry{ID: full, Errno: pbseUnkJobID}
	}
	by := user + "@" + s.cfg.SubmitHost
	if r.kind == refSub || r.kind == refRange {
		return s.delSubjobs(r, by, force, delHist, now)
	}
	t := now.Unix()
	switch j.State {
	case "F":
		if delHist {
			s.purge(j)
			return StatEntry{ID: j.ID}
		}
		return StatEntry{ID: full, Errno: pbseHistJobID}
	case "E":
		return StatEntry{ID: j.ID}
	case "R":
		s.delRunning(j, by, force, now)
		return StatEntry{ID: j.ID}
	}
	if j.Array != nil {
		s.delArray(j, by, force, delHist, now)
		return StatEntry{ID: j.ID}
	}
	j.State, j.Substate = "F", subTerminated
	j.Deleted, j.DeletedBy = true, by
	if j.Comment != "" {
		j.Comment += " and terminated"
	}
	j.Mtime, j.HistoryTime = t, t
	s.save(j)
	s.releaseDependents(j, now)
	if !s.cfg.historyEnabled() {
		s.purge(j)
	}
	return StatEntry{ID: j.ID}
}

// delRunning deletes a running job: the comment says so at once, the
// supervisor gets the signal (now or at the next tick).
func (s *server) delRunning(j *Job, by string, force bool, now time.Time) {
	if !j.Deleted {
		j.Deleted, j.DeletedBy = true, by
		j.Comment = j.RunComment + " and terminated by " + by
		j.Mtime = now.Unix()
	}
	if force && !j.Force {
		j.Force, j.Signaled = true, false
	}
	s.signalMom(j)
	s.save(j)
}

func (s *server) release(id string, now time.Time) StatEntry {
	j, full := s.lookup(id)
	if j == nil {
		return StatEntry{ID: full, Errno: pbseUnkJobID}
	}
	if j.finished() {
		return StatEntry{ID: full, Errno: pbseHistJobID}
	}
	if j.hasHold('u') {
		j.removeHold('u')
		s.unhold(j, now)
		j.Mtime = now.Unix()
		s.save(j)
	}
	return StatEntry{ID: j.ID}
}

// momState is jobs/<seq>/mom.json, written by the job's supervisor.
type momState struct {
	V          int    `json:"v"`
	Phase      string `json:"phase"` // running, exiting, done
	Pid        int    `json:"pid"`
	SessionID  int    `json:"session_id"`
	Start      int64  `json:"start"`
	End        int64  `json:"end,omitempty"`
	ExitStatus int    `json:"exit_status"`
	Reason     string `json:"reason,omitempty"` // the limit the job was killed for: walltime, cput, mem
	CPUT       int    `json:"cput"`
	MemKB      int64  `json:"mem_kb"`
	VmemKB     int64  `json:"vmem_kb"`
}

func readMom(dir string) (*momState, error) {
	b, err := os.ReadFile(filepath.Join(dir, "mom.json"))
	if err != nil {
		return nil, err
	}
	var m momState
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, err
	}
	return &m, nil
}

func pidAlive(pid int) bool {
	if pid <= 0 {
		return false
	}
	err := syscall.Kill(pid, 0)
	if err != nil && !errors.Is(err, syscall.EPERM) {
		return false
	}
	// A zombie (exited, not yet reaped by its new parent) is gone.
	if f := procStat(pid); len(f) > 0 && f[0] == "Z" {
		return false
	}
	return true
}

func (s *server) signalMom(j *Job) {
	if j.Signaled || j.MomPID == 0 {
		return
	}
	m, err := readMom(s.dirOf(j))
	if err != nil || m.Phase != "running" {
		return // the supervisor has not started the job yet; the next tick retries
	}
	sig := syscall.SIGUSR1
	if j.Force {
		sig = syscall.SIGUSR2
	}
	if err := syscall.Kill(j.MomPID, sig); err == nil {
		j.Signaled = true
	}
}

// tick follows the supervisors, moves jobs through E to F, and schedules.
func (s *server) tick() {
	s.mu.Lock()
	defer s.mu.Unlock()
	_ = s.reloadConfig(false)
	now := time.Now()
	for _, j := range sortedJobs(s.jobs) {
		if j.Array != nil {
			for _, sj := range j.Array.sortedActive() {
				s.follow(sj, now)
			}
		}
		switch j.State {
		case "R", "E":
			s.follow(j, now)
		case "W":
			if j.ExecutionTime <= now.Unix() {
				j.State, j.Substate, j.Etime, j.Mtime = "Q", subQueued, now.Unix(), now.Unix()
				s.save(j)
			}
		case "F":
			if j.HistoryTime != 0 && now.Sub(time.Unix(j.HistoryTime, 0)) > s.cfg.JobHistoryDuration.D() {
				s.purge(j)
			}
		}
	}
	s.schedule(now)
}

func (s *server) follow(j *Job, now time.Time) {
	dir := s.dirOf(j)
	m, err := readMom(dir)
	changed := false
	if err != nil {
		if j.MomPID != 0 && !pidAlive(j.MomPID) && now.Unix()-j.Stime > 2 {
			// The supervisor died before starting the job: JOB_EXEC_FAIL2.
			j.Lost = true
			m = &momState{Phase: "done", ExitStatus: -2, End: now.Unix(), Start: j.Stime}
		} else {
			return
		}
	}
	if m.Phase != "done" && !pidAlive(j.MomPID) && !pidAlive(m.Pid) && now.Unix()-j.Stime > 2 {
		// Supervisor and job are gone without an obit: treat as a node
		// failure (JOB_EXEC_FAIL_... -20, mother superior lost).
		j.Lost = true
		m.Phase, m.ExitStatus, m.End = "done", -20, now.Unix()
	}
	if m.SessionID != 0 && j.SessionID == 0 {
		j.SessionID = m.SessionID
		changed = true
	}
	if j.State == "R" && j.Substate == subPrerun && m.Pid != 0 {
		j.Substate = subRunning
		changed = true
	}
	if m.Pid != 0 {
		u := &Usage{CPUT: m.CPUT, MemKB: m.MemKB, VmemKB: m.VmemKB, NCPUs: j.Resources.totalInt("ncpus")}
		if j.Used == nil || *j.Used != *u {
			changed = true
		}
		j.Used = u
	}
	if j.Deleted && !j.Signaled && m.Phase == "running" {
		s.signalMom(j)
		changed = true
	}
	if m.Reason == "walltime" && !j.Walltimed {
		j.Walltimed = true
		changed = true
	}
	if m.Reason != "" && j.LimitKill == "" {
		j.LimitKill = m.Reason
		changed = true
	}
	if (m.Phase == "exiting" || m.Phase == "done") && j.State == "R" {
		j.State, j.Substate = "E", subStageout
		j.ExitingSince = now.UnixMilli()
		j.Mtime = now.Unix()
		changed = true
	}
	if m.Phase == "done" && j.State == "E" && now.UnixMilli()-j.ExitingSince >= s.cfg.ExitingDelay.D().Milliseconds() {
		s.finish(j, m, now)
		return
	}
	if changed {
		s.save(j)
	}
}

func (s *server) finish(j *Job, m *momState, now time.Time) {
	exit := m.ExitStatus
	end := m.End
	if end == 0 {
		end = now.Unix()
	}
	switch {
	case j.Walltimed:
		exit = execKillWalltime
		j.Substate = subFailed
		j.Comment = j.RunComment + " and exceeded resource walltime"
	case j.LimitKill == "cput" || j.LimitKill == "mem":
		exit = map[string]int{"cput": execKillCPUT, "mem": execKillMem}[j.LimitKill]
		j.Substate = subFailed
		j.Comment = j.RunComment + " and exceeded resource " + j.LimitKill
	case j.Deleted:
		j.Substate = subTerminated
		if j.qdelExit(&s.cfg) == QdelExitZero {
			exit = 0 // as a second 23.06.06 server reported (capture 16)
		}
	case exit == 0:
		j.Substate = subFinished
		j.Comment = j.RunComment + " and finished"
	default:
		j.Substate = subFailed
		j.Comment = j.RunComment + " and failed"
	}
	j.State = "F"
	if j.isSubjob() {
		j.State = "X" // until the whole array is F
	}
	j.ExitStatus = &exit
	one := 1
	j.Stageout = &one
	j.ObitTime = end
	if j.Used == nil {
		j.Used = &Usage{NCPUs: j.Resources.totalInt("ncpus")}
	}
	j.Used.CPUT, j.Used.MemKB, j.Used.VmemKB = m.CPUT, m.MemKB, m.VmemKB
	j.Used.Walltime = int(end - j.Stime)
	if j.Used.Walltime > 0 {
		j.Used.CPUPercent = j.Used.CPUT * 100 / j.Used.Walltime
	}
	j.Mtime, j.HistoryTime = now.Unix(), now.Unix()
	j.Slots = nil
	s.log.Info("job finished", "id", j.ID, "exit_status", exit, "substate", j.Substate)
	s.save(j)
	if j.isSubjob() {
		s.subjobFinished(j, now)
		return
	}
	s.releaseDependents(j, now)
	if !s.cfg.historyEnabled() {
		s.purge(j)
	}
}

// schedule starts queued jobs that fit on the node, in submission order
// (no strict ordering: a small job may pass a big one, as by default). An
// array's queued subjobs run in index order, each like a single job, at
// most max_run_subjobs of them at a time.
func (s *server) schedule(now time.Time) {
	if !s.cfg.scheduling() {
		return
	}
	usedC, usedG := 0, 0
	var usedM int64
	excl := false
	busy := map[int]bool{}
	anyRunning := false
	use := func(j *Job) {
		if j.State != "R" {
			return
		}
		anyRunning = true
		usedC += j.Resources.totalInt("ncpus")
		usedG += j.Resources.totalInt("ngpus")
		usedM += j.Resources.totalSize("mem")
		excl = excl || j.Resources.exclusive()
		for _, sl := range j.Slots {
			busy[sl] = true
		}
	}
	for _, j := range s.jobs {
		use(j)
		if j.Array != nil {
			for _, sj := range j.Array.active {
				use(sj)
			}
		}
	}
	totM, _ := parseSize(s.cfg.Mem)
	// why returns the scheduler's comment for a job that cannot start now.
	why := func(rr ResourceRequest) string {
		needC, needG, needM := rr.totalInt("ncpus"), rr.totalInt("ngpus"), rr.totalSize("mem")
		switch {
		case needC > s.cfg.NCPUs:
			return fmt.Sprintf("Can Never Run: Insufficient amount of resource: ncpus (R: %d A: %d T: %d)", needC, s.cfg.NCPUs, s.cfg.NCPUs)
		case needG > s.cfg.NGPUs:
			return fmt.Sprintf("Can Never Run: Insufficient amount of resource: ngpus (R: %d A: %d T: %d)", needG, s.cfg.NGPUs, s.cfg.NGPUs)
		case needM > totM:
			return fmt.Sprintf("Can Never Run: Insufficient amount of resource: mem (R: %s A: %s T: %s)", formatSize(needM), s.cfg.Mem, s.cfg.Mem)
		case strings.Contains(rr.List["place"], "scatter") && len(rr.Chunks) > 0 && rr.List["nodect"] != "1":
			return "Can Never Run: Not enough total nodes available"
		case excl || (rr.exclusive() && anyRunning) || usedC >= s.cfg.NCPUs:
			return "Not Running: Not enough free nodes available"
		case needC > s.cfg.NCPUs-usedC:
			return fmt.Sprintf("Not Running: Insufficient amount of resource: ncpus (R: %d A: %d T: %d)", needC, s.cfg.NCPUs-usedC, s.cfg.NCPUs)
		case needG > s.cfg.NGPUs-usedG:
			return fmt.Sprintf("Not Running: Insufficient amount of resource: ngpus (R: %d A: %d T: %d)", needG, s.cfg.NGPUs-usedG, s.cfg.NGPUs)
		case needM > totM-usedM:
			return fmt.Sprintf("Not Running: Insufficient amount of resource: mem (R: %s A: %s T: %s)", formatSize(needM), formatSize(totM-usedM), s.cfg.Mem)
		}
		return ""
	}
	started := func(rr ResourceRequest) {
		anyRunning = true
		usedC += rr.totalInt("ncpus")
		usedG += rr.totalInt("ngpus")
		usedM += rr.totalSize("mem")
		excl = excl || rr.exclusive()
	}
	for _, j := range sortedJobs(s.jobs) {
		if j.Array != nil {
			s.scheduleArray(j, busy, now, why, started)
			continue
		}
		if j.State != "Q" {
			continue
		}
		rr := j.Resources
		if comment := why(rr); comment != "" {
			if j.Comment != comment {
				j.Comment = comment
				s.save(j)
			}
			continue
		}
		if err := s.start(j, busy, now); err != nil {
			s.log.Error("start job", "id", j.ID, "err", err)
			j.Comment = "Not Running: PBS Error: Execution server rejected request"
			s.save(j)
			continue
		}
		started(rr)
	}
}

// scheduleArray starts the queued subjobs of an array (Q or B) that fit.
// The scheduler's comment goes to a parent that has not begun; a begun
// array keeps "Job Array Began at ..." (capture 13).
func (s *server) scheduleArray(p *Job, busy map[int]bool, now time.Time, why func(ResourceRequest) string, started func(ResourceRequest)) {
	ar := p.Array
	if (p.State != "Q" && p.State != "B") || ar.nQueued == 0 {
		return
	}
	comment := func(c string) {
		if p.State == "Q" && p.Comment != c {
			p.Comment = c
			s.save(p)
		}
	}
	for ar.nQueued > 0 {
		if ar.MaxRun != nil && ar.runningSubjobs() >= *ar.MaxRun {
			// check.cpp MAX_RUN_SUBJOBS
			comment("Not Running: Number of concurrent running subjobs limit reached")
			return
		}
		if c := why(p.Resources); c != "" {
			comment(c)
			return
		}
		if err := s.startSubjob(p, busy, now); err != nil {
			s.log.Error("start subjob", "id", p.ID, "err", err)
			comment("Not Running: PBS Error: Execution server rejected request")
			return
		}
		started(p.Resources)
	}
}

func (s *server) start(j *Job, busy map[int]bool, now time.Time) error {
	node := s.cfg.NodeName
	var hosts, vnodes []string
	var slots []int
	var nodefile strings.Builder
	next := 0
	for _, c := range j.Resources.Chunks {
		for i := 0; i < c.Count; i++ {
			for busy[next] {
				next++
			}
			busy[next] = true
			slots = append(slots, next)
			n := c.intRes("ncpus", 1)
			h := node + "/" + strconv.Itoa(next)
			if n > 1 {
				h += "*" + strconv.Itoa(n)
			}
			hosts = append(hosts, h)
			v := "(" + node + ":ncpus=" + strconv.Itoa(n)
			if m := c.sizeRes("mem"); m > 0 {
				v += ":mem=" + strconv.FormatInt(m/1024, 10) + "kb"
			}
			if g := c.intRes("ngpus", 0); g > 0 {
				v += ":ngpus=" + strconv.Itoa(g)
			}
			vnodes = append(vnodes, v+")")
			def := 1 // the MoM's default: one rank per chunk, none with ncpus=0
			if n == 0 {
				def = 0
			}
			mpi := c.intRes("mpiprocs", def)
			for k := 0; k < mpi; k++ {
				nodefile.WriteString(node + "\n")
			}
		}
	}
	if err := os.WriteFile(s.inst.path("aux", j.ID), []byte(nodefile.String()), 0o644); err != nil {
		return err
	}
	t := now.Unix()
	j.ExecHost = strings.Join(hosts, "+")
	j.ExecVnode = strings.Join(vnodes, "+")
	j.Slots = slots
	j.State, j.Substate = "R", subPrerun
	j.Stime, j.Mtime = t, t
	j.RunCount++
	j.RunComment = runComment(now, j.ExecVnode)
	j.Comment = j.RunComment
	j.Used, j.SessionID = nil, 0
	dir := s.dirOf(j)
	_ = os.Remove(filepath.Join(dir, "mom.json"))
	s.save(j)
	logf, err := os.OpenFile(filepath.Join(dir, "mom.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(s.self, "mom", momKey(j))
	cmd.Env = append(os.Environ(), EnvHome+"="+s.inst.Home)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		j.State, j.Substate, j.RunCount = "Q", subQueued, j.RunCount-1
		j.Stime, j.ExecHost, j.ExecVnode, j.Slots = 0, "", "", nil
		return err
	}
	go func() { _ = cmd.Wait() }()
	j.MomPID = cmd.Process.Pid
	s.save(j)
	s.log.Info("job started", "id", j.ID, "exec_vnode", j.ExecVnode, "mom_pid", j.MomPID)
	return nil
}

func (s *server) killAllJobs() {
	s.mu.Lock()
	defer s.mu.Unlock()
	kill := func(j *Job) {
		if j.State != "R" && j.State != "E" {
			return
		}
		if m, err := readMom(s.dirOf(j)); err == nil && m.SessionID > 0 {
			signalSession(m.SessionID, syscall.SIGKILL)
		}
		if j.MomPID > 0 {
			_ = syscall.Kill(j.MomPID, syscall.SIGKILL)
		}
	}
	for _, j := range s.jobs {
		kill(j)
		if j.Array != nil {
			for _, sj := range j.Array.active {
				kill(sj)
			}
		}
	}
}

// eachJob calls f for every job the server holds: regular jobs, array
// parents and the subjobs that have a job of their own.
func (s *server) eachJob(f func(*Job)) {
	for _, j := range s.jobs {
		f(j)
		if j.Array != nil {
			for _, sj := range j.Array.subjobs {
				f(sj)
			}
		}
	}
}

func (s *server) serverAttrs() []Attr {
	counts := map[string]int{}
	total := 0
	assignedC, nodect := 0, 0
	s.eachJob(func(j *Job) {
		total++
		counts[j.State]++
		if j.State == "R" {
			assignedC += j.Resources.totalInt("ncpus")
			n, _ := strconv.Atoi(j.Resources.List["nodect"])
			nodect += n
		}
	})
	b := func(v bool) string {
		if v {
			return "True"
		}
		return "False"
	}
	st := fmt.Sprintf("Transit:0 Queued:%d Held:%d Waiting:%d Running:%d Exiting:%d Begun:%d ",
		counts["Q"], counts["H"], counts["W"], counts["R"], counts["E"], counts["B"])
	a := []Attr{
		{Name: "server_state", Value: "Active"},
		{Name: "server_host", Value: s.cfg.ServerName},
		{Name: "scheduling", Value: b(s.cfg.scheduling())},
		{Name: "total_jobs", Value: strconv.Itoa(total)},
		{Name: "state_count", Value: st},
		{Name: "default_queue", Value: s.cfg.DefaultQueue},
		{Name: "log_events", Value: "511"},
		{Name: "mailer", Value: "/usr/sbin/sendmail"},
		{Name: "mail_from", Value: "adm"},
		{Name: "query_other_jobs", Value: "True"},
		{Name: "resources_default", Resource: "ncpus", Value: "1"},
		{Name: "default_chunk", Resource: "ncpus", Value: "1"},
		{Name: "resources_assigned", Resource: "ncpus", Value: strconv.Itoa(assignedC)},
		{Name: "resources_assigned", Resource: "nodect", Value: strconv.Itoa(nodect)},
		{Name: "scheduler_iteration", Value: "600"},
		{Name: "resv_enable", Value: "True"},
		{Name: "node_fail_requeue", Value: "310"},
		{Name: "max_array_size", Value: "10000"},
		{Name: "resend_term_delay", Value: "5"},
		{Name: "pbs_license_min", Value: "0"},
		{Name: "pbs_license_max", Value: "2147483647"},
		{Name: "pbs_license_linger_time", Value: "31536000"},
		{Name: "license_count", Value: "Avail_Global:1000000 Avail_Local:1000000 Used:0 High_Use:0"},
		{Name: "pbs_version", Value: s.cfg.PBSVersion},
		{Name: "eligible_time_enable", Value: "False"},
		{Name: "job_history_enable", Value: b(s.cfg.historyEnabled())},
		{Name: "max_concurrent_provision", Value: "5"},
		{Name: "clear_topjob_estimates_enable", Value: "False"},
		{Name: "max_job_sequence_id", Value: strconv.Itoa(maxJobSequenceID)},
	}
	return a
}

func (s *server) queueStats() []StatEntry {
	var out []StatEntry
	for _, q := range s.cfg.Queues {
		counts := map[string]int{}
		total := 0
		s.eachJob(func(j *Job) {
			if j.Queue == q.Name && !j.done() {
				total++
				counts[j.State]++
			}
		})
		attrs := []Attr{
			{Name: "queue_type", Value: "Execution"},
			{Name: "total_jobs", Value: strconv.Itoa(total)},
			{Name: "state_count", Value: fmt.Sprintf("Transit:0 Queued:%d Held:%d Waiting:%d Running:%d Exiting:%d Begun:%d ",
				counts["Q"], counts["H"], counts["W"], counts["R"], counts["E"], counts["B"])},
		}
		// as a real server prints them (qstat -Qf after qmgr's
		// "set queue workq resources_max.walltime=01:00:00"): the set
		// limits and defaults, sorted, then what is assigned
		for _, r := range slices.Sorted(maps.Keys(q.ResourcesMax)) {
			attrs = append(attrs, Attr{Name: "resources_max", Resource: r, Value: q.ResourcesMax[r]})
		}
		for _, r := range slices.Sorted(maps.Keys(q.ResourcesDefault)) {
			attrs = append(attrs, Attr{Name: "resources_default", Resource: r, Value: q.ResourcesDefault[r]})
		}
		assigned := map[string]int{}
		s.eachJob(func(j *Job) {
			if j.Queue == q.Name && j.State == "R" {
				assigned["mpiprocs"] += j.Resources.totalInt("mpiprocs")
				assigned["ncpus"] += j.Resources.totalInt("ncpus")
				assigned["nodect"] += max(j.Resources.totalInt("nodect"), 1)
			}
		})
		attrs = append(attrs,
			Attr{Name: "resources_assigned", Resource: "mpiprocs", Value: strconv.Itoa(assigned["mpiprocs"])},
			Attr{Name: "resources_assigned", Resource: "ncpus", Value: strconv.Itoa(assigned["ncpus"])},
			Attr{Name: "resources_assigned", Resource: "nodect", Value: strconv.Itoa(assigned["nodect"])},
			Attr{Name: "enabled", Value: "True"},
			Attr{Name: "started", Value: "True"})
		out = append(out, StatEntry{ID: q.Name, Attrs: attrs})
	}
	return out
}

func (s *server) nodeAttrs() []Attr {
	assigned := 0
	state := "free"
	s.eachJob(func(j *Job) {
		if j.State == "R" {
			assigned += j.Resources.totalInt("ncpus")
		}
	})
	if assigned >= s.cfg.NCPUs {
		state = "job-busy"
	}
	a := []Attr{
		{Name: "Mom", Value: s.cfg.NodeName},
		{Name: "ntype", Value: "PBS"},
		{Name: "state", Value: state},
		{Name: "pcpus", Value: strconv.Itoa(s.cfg.NCPUs)},
		{Name: "resources_available", Resource: "arch", Value: "linux"},
		{Name: "resources_available", Resource: "host", Value: s.cfg.NodeName},
		{Name: "resources_available", Resource: "mem", Value: s.cfg.Mem},
		{Name: "resources_available", Resource: "ncpus", Value: strconv.Itoa(s.cfg.NCPUs)},
	}
	if s.cfg.NGPUs > 0 {
		a = append(a, Attr{Name: "resources_available", Resource: "ngpus", Value: strconv.Itoa(s.cfg.NGPUs)})
	}
	a = append(a,
		Attr{Name: "resources_available", Resource: "vnode", Value: s.cfg.NodeName},
		Attr{Name: "resources_assigned", Resource: "ncpus", Value: strconv.Itoa(assigned)},
		Attr{Name: "resv_enable", Value: "True"},
		Attr{Name: "sharing", Value: "default_shared"},
		Attr{Name: "license", Value: "l"},
	)
	return a
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
