// Package local runs Tasks as local processes, like a one-node batch
// system. Each job is supervised by a detached shim process (the tether
// binary's hidden "local-shim" command) in its own session, so the job
// outlives the tether process that submitted it. The shim enforces the
// walltime (warn signal, then SIGTERM, then SIGKILL after kill_wait),
// handles cancellation and records the job's state in a spool file, which
// Query reads for all jobs at once.
package local

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tether-hpc/tether/backends"
	"github.com/tether-hpc/tether/rundir"
)

// jobVersion is the spool file format.
const jobVersion = 1

// Job is a local job's spool record.
type Job struct {
	V          int                 `json:"v"`
	ID         string              `json:"id"`
	Request    backends.JobRequest `json:"request"`
	KillWait   time.Duration       `json:"kill_wait"`
	State      backends.State      `json:"state"`
	Reason     string              `json:"reason,omitempty"`
	ShimPID    int                 `json:"shim_pid,omitempty"`
	ShimStart  uint64              `json:"shim_start,omitempty"`
	WrapperPID int                 `json:"wrapper_pid,omitempty"`
	Submit     time.Time           `json:"submit"`
	Start      time.Time           `json:"start,omitzero"`
	End        time.Time           `json:"end,omitzero"`
	ExitCode   *int                `json:"exit_code,omitempty"`
	Signal     int                 `json:"signal,omitempty"`
	Host       string              `json:"host,omitempty"`
	// CancelAt is set by Cancel: a supervisor that has not started the
	// wrapper yet does not start it, and a job whose supervisor is gone
	// without a final state was cancelled.
	CancelAt time.Time `json:"cancel_at,omitzero"`
	// Env is the job's environment from the submitter (JobRequest.Env):
	// the wrapper gets exactly this, not the supervisor's environment.
	Env map[string]string `json:"env,omitempty"`
	// LimitMemory: the supervisor runs the job in a memory cgroup of
	// the request's size. MemoryLimit says whether it could ("" when
	// the job asked no memory); OOMKills and MaxRSSBytes are the
	// group's counters when the job ended.
	LimitMemory bool   `json:"limit_memory,omitempty"`
	MemoryLimit string `json:"memory_limit,omitempty"`
	OOMKills    int    `json:"oom_kills,omitempty"`
	MaxRSSBytes int64  `json:"max_rss_bytes,omitempty"`
	// Array is the id of the array this job is an element of; its
	// supervisor starts the element's own.
	Array string `json:"array,omitempty"`
}

// Backend is the local process backend.
type Backend struct {
	// Spool is the directory of job records (<state_dir>/local).
	Spool string
	// Shim is the argv prefix that starts a supervisor; the job file path
	// is appended ("/usr/bin/tether", "local-shim").
	Shim     []string
	KillWait time.Duration
	// LimitMemory runs each job that asks for memory in a memory cgroup
	// of that size, where the kernel lets this process make one.
	LimitMemory bool
	Now         func() time.Time
	// afterShimStart, when a test sets it, runs in Submit right after the
	// supervisor has started, before Submit records its pid.
	afterShimStart func(ctx context.Context, jobPath string)
	// afterRead, when a test sets it, runs in Query between reading a live
	// job's record and looking at its supervisor.
	afterRead func(path string)
	// beforeShimStart, when a test sets it, runs in Submit after the job
	// file is written and before the supervisor starts.
	beforeShimStart func(ctx context.Context, jobPath string)

	// seen: the job records Query read, kept while their file is the same
	// (every write renames a new file in), so a long-lived caller (tether
	// watch, the monitor) re-reads only the records that changed
	seenMu sync.Mutex
	seen   map[string]seenJob
	settle time.Duration // seenSettle; tests set less
}

type seenJob struct {
	ino, size int64
	mod, chg  int64 // ns
	job       Job
}

// seenSettle: a record written this recently is not kept (a filesystem
// with 1 s timestamps could hide a second write within the same tick).
const seenSettle = 2 * time.Second

func (b *Backend) settleTime() time.Duration {
	if b.settle != 0 {
		return b.settle
	}
	return seenSettle
}

// readJobSeen reads a job record for Query, or returns a copy of the one
// read before when its file is unchanged (the same inode, size, mtime and
// ctime, and older than seenSettle: writes rename a new file in, so an
// unchanged file is the same record).
func (b *Backend) readJobSeen(path string) (*Job, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil, os.ErrNotExist
		}
		return readJob(path)
	}
	b.seenMu.Lock()
	s, ok := b.seen[path]
	b.seenMu.Unlock()
	if ok && s.ino == int64(st.Ino) && s.size == st.Size && s.mod == st.Mtim.Nano() && s.chg == st.Ctim.Nano() {
		j := s.job
		return &j, nil
	}
	j, err := readJob(path)
	if err != nil {
		return nil, err
	}
	b.seenMu.Lock()
	if b.seen == nil {
		b.seen = map[string]seenJob{}
	}
	if j.State.Terminal() || time.Since(time.Unix(0, max(st.Mtim.Nano(), st.Ctim.Nano()))) < b.settleTime() {
		delete(b.seen, path) // an ended job is read a few times more at most; a fresh one again
	} else {
		b.seen[path] = seenJob{ino: int64(st.Ino), size: st.Size, mod: st.Mtim.Nano(), chg: st.Ctim.Nano(), job: *j}
	}
	b.seenMu.Unlock()
	return j, nil
}

// New returns a backend spooling under dir (created at the first submit).
func New(dir string, shim []string, killWait time.Duration) (*Backend, error) {
	return &Backend{Spool: dir, Shim: shim, KillWait: killWait, Now: time.Now}, nil
}

func (b *Backend) jobsDir() string          { return filepath.Join(b.Spool, "jobs") }
func (b *Backend) jobPath(id string) string { return filepath.Join(b.jobsDir(), id+".json") }
func lockPath(jobPath string) string        { return strings.TrimSuffix(jobPath, ".json") + ".lock" }
func readJob(path string) (*Job, error)     { var j Job; return &j, rundir.ReadJSON(path, &j) }
func writeJob(path string, j *Job) error    { j.V = jobVersion; return rundir.WriteJSON(path, j) }
func validID(id string) bool                { _, err := strconv.ParseUint(id, 10, 64); return err == nil }
func (b *Backend) WatchPaths() []string     { return []string{b.jobsDir()} }

// update changes a job record under its lock.
func update(ctx context.Context, path string, f func(*Job)) (*Job, error) {
	l, err := rundir.LockFile(ctx, lockPath(path))
	if err != nil {
		return nil, err
	}
	defer l.Unlock()
	j, err := readJob(path)
	if err != nil {
		return nil, err
	}
	f(j)
	return j, writeJob(path, j)
}

// nextID hands out increasing job ids, like a scheduler.
func (b *Backend) nextID(ctx context.Context) (string, error) {
	l, err := rundir.LockFile(ctx, filepath.Join(b.Spool, "seq.lock"))
	if err != nil {
		return "", err
	}
	defer l.Unlock()
	seqPath := filepath.Join(b.Spool, "seq")
	n := 0
	if data, err := os.ReadFile(seqPath); err == nil {
		n, _ = strconv.Atoi(strings.TrimSpace(string(data)))
	}
	n++
	if err := rundir.WriteFileAtomic(seqPath, []byte(strconv.Itoa(n)+"\n"), 0o600); err != nil {
		return "", err
	}
	return strconv.Itoa(n), nil
}

// Submit records the job and starts its detached supervisor. Once the
// supervisor runs, the job exists: Submit returns its id whatever happens
// next (the supervisor records its own pid, and Query keeps a fresh job
// without one pending meanwhile), so a started job is never forgotten.
func (b *Backend) Submit(ctx context.Context, req backends.JobRequest) (backends.JobID, error) {
	if len(b.Shim) == 0 {
		return "", errors.New("local backend: no supervisor command configured")
	}
	if err := os.MkdirAll(b.jobsDir(), 0o700); err != nil {
		return "", fmt.Errorf("local backend spool: %w", err)
	}
	id, err := b.nextID(ctx)
	if err != nil {
		return "", err
	}
	// the log first: a job record is written only for a job that starts
	logf, err := os.OpenFile(filepath.Join(b.jobsDir(), id+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return "", fmt.Errorf("local backend: %w", err)
	}
	defer logf.Close()
	host, _ := os.Hostname()
	path := b.jobPath(id)
	j := &Job{ID: id, Request: req, KillWait: b.KillWait, State: backends.Pending, Submit: b.Now().UTC(), Host: host, Env: req.Env, LimitMemory: b.LimitMemory}
	if err := writeJob(path, j); err != nil {
		return "", fmt.Errorf("local backend: %w", err)
	}
	if b.beforeShimStart != nil {
		b.beforeShimStart(ctx, path)
	}
	cmd := exec.Command(b.Shim[0], append(append([]string{}, b.Shim[1:]...), path)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	cmd.Dir = "/"
	if err := cmd.Start(); err != nil {
		// a record without a supervisor would look pending for a while
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		update(uctx, path, func(j *Job) {
			j.State, j.Reason, j.End = backends.Failed, "cannot start the supervisor: "+err.Error(), b.Now().UTC()
		})
		return "", fmt.Errorf("local backend: start supervisor: %w", err)
	}
	pid := cmd.Process.Pid
	go cmd.Wait() // reap the shim if this process outlives it
	if b.afterShimStart != nil {
		b.afterShimStart(ctx, path)
	}
	// Best effort: the supervisor records its pid itself as it starts.
	// Failing here (a cancelled ctx, a busy lock) must not lose the job.
	start := startTime(pid)
	update(ctx, path, func(j *Job) {
		if j.ShimPID == 0 {
			j.ShimPID, j.ShimStart = pid, start
		}
	})
	return backends.JobID(id), nil
}

// Query reads the spool records of all ids. A job whose supervisor is gone
// without a final state has vanished and is left out of the result.
func (b *Backend) Query(ctx context.Context, ids []backends.JobID) (map[backends.JobID]backends.JobStatus, error) {
	out := make(map[backends.JobID]backends.JobStatus, len(ids))
	arrays := map[string]bool{}
	for _, id := range ids {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if !validAnyID(string(id)) {
			continue
		}
		j, err := b.readJobSeen(b.jobPath(string(id)))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("local backend: %w", err)
		}
		if !j.State.Terminal() {
			if b.afterRead != nil {
				b.afterRead(b.jobPath(string(id)))
			}
			supervised := j.ShimPID == 0 && b.Now().Sub(j.Submit) < 10*time.Second || alive(j.ShimPID, j.ShimStart) ||
				j.ShimPID == 0 && j.Array != "" && b.arraySupervised(j.Array, arrays)
			if !supervised {
				// the supervisor may have written the final state and
				// exited between the read and the look at its pid
				if again, err := readJob(b.jobPath(string(id))); err == nil && again.State.Terminal() {
					out[id] = again.status()
					continue
				}
			}
			switch {
			case !supervised && !j.CancelAt.IsZero():
				// the supervisor died of the cancel before it could record it
				j.State, j.Reason = backends.Cancelled, "cancelled; the supervisor ended without a final state"
			case !supervised:
				continue // vanished: the exit file decides
			}
		}
		out[id] = j.status()
	}
	return out, nil
}

func (j *Job) status() backends.JobStatus {
	st := backends.JobStatus{
		ID: backends.JobID(j.ID), State: j.State, Native: string(j.State),
		ExitCode: j.ExitCode, Signal: j.Signal, Reason: j.Reason,
		Submit: j.Submit, Start: j.Start, End: j.End,
	}
	if !j.Start.IsZero() {
		st.Nodes = []string{j.Host}
		if j.Request.Walltime > 0 {
			st.Deadline = j.Start.Add(j.Request.Walltime)
		}
	}
	return st
}

// Cancel asks the job's supervisor to end it (SIGTERM, then SIGKILL after
// kill_wait). A job whose supervisor has vanished has its processes killed
// directly; one whose supervisor has not started yet never starts. The
// decision is taken under the job's lock, so it cannot race the supervisor
// starting. Cancelling a finished job, or an id this backend does not
// know, is not an error.
func (b *Backend) Cancel(ctx context.Context, id backends.JobID) error {
	if !validAnyID(string(id)) {
		return fmt.Errorf("local backend: invalid job id %q", id)
	}
	if _, err := os.Stat(b.arrayPath(string(id))); err == nil {
		return b.cancelArray(ctx, string(id))
	}
	path := b.jobPath(string(id))
	if j, err := readJob(path); errors.Is(err, os.ErrNotExist) {
		return nil
	} else if err != nil {
		return fmt.Errorf("local backend: job %s: %w", id, err)
	} else if j.State.Terminal() {
		return nil
	}
	signal := 0
	_, err := update(ctx, path, func(j *Job) {
		if j.State.Terminal() {
			return
		}
		if j.CancelAt.IsZero() {
			j.CancelAt = b.Now().UTC()
		}
		switch {
		case alive(j.ShimPID, j.ShimStart):
			signal = j.ShimPID
		case j.ShimPID == 0:
			// the supervisor has not recorded itself: it sees this first
			j.State, j.Reason, j.End = backends.Cancelled, "cancelled before start", b.Now().UTC()
		default:
			killSession(j.ShimPID, syscall.SIGKILL)
			j.State, j.Reason, j.End = backends.Cancelled, "cancelled; the supervisor had vanished", b.Now().UTC()
		}
	})
	if err != nil {
		return fmt.Errorf("local backend: cancel job %s: %w", id, err)
	}
	if signal > 0 {
		if err := syscall.Kill(signal, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
			return fmt.Errorf("local backend: cancel job %s: %w", id, err)
		}
	}
	return nil
}

// FindByTag finds the job of a run attempt by its request tag, newest job
// first. A spool without jobs has none.
func (b *Backend) FindByTag(ctx context.Context, tag string) (backends.JobID, bool, error) {
	ents, err := os.ReadDir(b.jobsDir())
	if errors.Is(err, os.ErrNotExist) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("local backend: %w", err)
	}
	var ids []uint64
	arrays := map[uint64]bool{}
	for _, e := range ents {
		if n, ok := strings.CutSuffix(e.Name(), ".array.json"); ok {
			if v, err := strconv.ParseUint(n, 10, 64); err == nil {
				ids = append(ids, v)
				arrays[v] = true
			}
		} else if n, ok := strings.CutSuffix(e.Name(), ".json"); ok {
			if v, err := strconv.ParseUint(n, 10, 64); err == nil {
				ids = append(ids, v)
			}
		}
	}
	slices.Sort(ids)
	for i := len(ids) - 1; i >= 0; i-- {
		if err := ctx.Err(); err != nil {
			return "", false, err
		}
		id := strconv.FormatUint(ids[i], 10)
		if arrays[ids[i]] {
			if a, err := readArray(b.arrayPath(id)); err == nil && a.Tag == tag {
				return backends.JobID(id), true, nil
			}
			continue
		}
		j, err := readJob(b.jobPath(id))
		if err == nil && j.Request.Tag == tag {
			return backends.JobID(j.ID), true, nil
		}
	}
	return "", false, nil
}

// DeliversWarnSignal: the supervisor sends the warn signal itself.
func (b *Backend) DeliversWarnSignal(context.Context) bool { return true }

// Usage reports a finished local job's use: its wall time, the CPUs and
// GPUs it asked for over that time, and the largest resident set of its
// processes (the memory cgroup's peak, or the wrapper's rusage).
func (b *Backend) Usage(ctx context.Context, id backends.JobID) (backends.Usage, bool, error) {
	if !validAnyID(string(id)) {
		return backends.Usage{}, false, nil
	}
	j, err := readJob(b.jobPath(string(id)))
	if errors.Is(err, os.ErrNotExist) {
		return backends.Usage{}, false, nil
	}
	if err != nil {
		return backends.Usage{}, false, fmt.Errorf("local backend: %w", err)
	}
	// Usage is asked about a decided attempt: its wrapper has ended, but
	// the supervisor may not have recorded the end yet (it kills stray
	// processes and reads the memory cgroup first), which takes
	// milliseconds: wait for it briefly
	for try := 0; !j.State.Terminal() && j.ShimPID > 0 && alive(j.ShimPID, j.ShimStart) && try < 50; try++ {
		select {
		case <-ctx.Done():
			return backends.Usage{}, false, nil
		case <-time.After(20 * time.Millisecond):
		}
		if j, err = readJob(b.jobPath(string(id))); err != nil {
			return backends.Usage{}, false, fmt.Errorf("local backend: %w", err)
		}
	}
	if !j.State.Terminal() {
		// the supervisor may have recorded the end just as it exited
		if again, err := readJob(b.jobPath(string(id))); err == nil {
			j = again
		}
	}
	if !j.State.Terminal() || j.Start.IsZero() || !j.End.After(j.Start) {
		return backends.Usage{}, false, nil
	}
	r := j.Request
	tasks := max(r.NTasks, 1)
	el := j.End.Sub(j.Start)
	return backends.Usage{
		Elapsed: el, CPUSeconds: el.Seconds() * float64(tasks*max(r.CPUsPerTask, 1)),
		GPUSeconds: el.Seconds() * float64(tasks*r.GPUsPerTask), MaxRSSBytes: j.MaxRSSBytes, Nodes: 1, Source: "local",
	}, true, nil
}
