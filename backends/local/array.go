package local

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/tether-hpc/tether/backends"
	"github.com/tether-hpc/tether/rundir"
)

// arrayVersion is the format of an array's spool record.
const arrayVersion = 1

// arrayIndexVar gives each element of a local array its index.
const arrayIndexVar = "TETHER_LOCAL_ARRAY_INDEX"

// Array is a local job array's spool record (jobs/<id>.array.json). Its
// elements are jobs <id>_<i> of their own; one array supervisor starts
// them in index order, at most MaxRunning at a time.
type Array struct {
	V          int       `json:"v"`
	ID         string    `json:"id"`
	Size       int       `json:"size"`
	MaxRunning int       `json:"max_running,omitempty"`
	Tag        string    `json:"tag,omitempty"`
	Shim       []string  `json:"shim"`
	Submit     time.Time `json:"submit"`
	ShimPID    int       `json:"shim_pid,omitempty"`
	ShimStart  uint64    `json:"shim_start,omitempty"`
	CancelAt   time.Time `json:"cancel_at,omitzero"`
}

func (b *Backend) arrayPath(id string) string { return filepath.Join(b.jobsDir(), id+".array.json") }

// IsArrayFile reports whether a supervisor's argument is an array record.
func IsArrayFile(path string) bool { return strings.HasSuffix(path, ".array.json") }

func readArray(path string) (*Array, error) { var a Array; return &a, rundir.ReadJSON(path, &a) }

// updateArray changes an array record under its lock.
func updateArray(ctx context.Context, path string, f func(*Array)) (*Array, error) {
	l, err := rundir.LockFile(ctx, strings.TrimSuffix(path, ".json")+".lock")
	if err != nil {
		return nil, err
	}
	defer l.Unlock()
	a, err := readArray(path)
	if err != nil {
		return nil, err
	}
	f(a)
	a.V = arrayVersion
	return a, rundir.WriteJSON(path, a)
}

// ArrayIndexVar: each element finds its index in TETHER_LOCAL_ARRAY_INDEX.
func (b *Backend) ArrayIndexVar() string { return arrayIndexVar }

// ElementID is "<array>_<i>", as Slurm writes it.
func (b *Backend) ElementID(array backends.JobID, i int) backends.JobID {
	return backends.JobID(string(array) + "_" + strconv.Itoa(i))
}

// splitElement parses "<array>_<i>".
func splitElement(id string) (array string, i int, ok bool) {
	a, idx, found := strings.Cut(id, "_")
	if !found || !validID(a) {
		return "", 0, false
	}
	n, err := strconv.Atoi(idx)
	if err != nil || n < 0 {
		return "", 0, false
	}
	return a, n, true
}

// validAnyID accepts a job id, an array id and an element id.
func validAnyID(id string) bool {
	_, _, ok := splitElement(id)
	return ok || validID(id)
}

// SubmitArray records every element and starts the array's supervisor.
func (b *Backend) SubmitArray(ctx context.Context, req backends.JobRequest, spec backends.ArraySpec) (backends.JobID, error) {
	if len(b.Shim) == 0 {
		return "", errors.New("local backend: no supervisor command configured")
	}
	if spec.Size < 1 {
		return "", fmt.Errorf("%w: an array needs at least one element", backends.ErrRejected)
	}
	if err := os.MkdirAll(b.jobsDir(), 0o700); err != nil {
		return "", fmt.Errorf("local backend spool: %w", err)
	}
	id, err := b.nextID(ctx)
	if err != nil {
		return "", err
	}
	logf, err := os.OpenFile(filepath.Join(b.jobsDir(), id+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return "", fmt.Errorf("local backend: %w", err)
	}
	defer logf.Close()
	host, _ := os.Hostname()
	now := b.Now().UTC()
	for i := range spec.Size {
		r := req
		ix := strconv.Itoa(i)
		r.Stdout = strings.ReplaceAll(req.Stdout, backends.ArrayIndexToken, ix)
		r.Stderr = strings.ReplaceAll(req.Stderr, backends.ArrayIndexToken, ix)
		env := make(map[string]string, len(req.Env)+1)
		for k, v := range req.Env {
			env[k] = v
		}
		env[arrayIndexVar] = ix
		eid := string(b.ElementID(backends.JobID(id), i))
		j := &Job{ID: eid, Request: r, KillWait: b.KillWait, State: backends.Pending, Submit: now, Host: host, Env: env,
			LimitMemory: b.LimitMemory, Array: id}
		if err := writeJob(b.jobPath(eid), j); err != nil {
			return "", fmt.Errorf("local backend: %w", err)
		}
	}
	path := b.arrayPath(id)
	a := &Array{V: arrayVersion, ID: id, Size: spec.Size, MaxRunning: spec.MaxRunning, Tag: req.Tag, Shim: b.Shim, Submit: now}
	if err := rundir.WriteJSON(path, a); err != nil {
		return "", fmt.Errorf("local backend: %w", err)
	}
	cmd := exec.Command(b.Shim[0], append(append([]string{}, b.Shim[1:]...), path)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	cmd.Dir = "/"
	if err := cmd.Start(); err != nil {
		for i := range spec.Size {
			eid := b.jobPath(string(b.ElementID(backends.JobID(id), i)))
			update(context.WithoutCancel(ctx), eid, func(j *Job) {
				j.State, j.Reason, j.End = backends.Failed, "cannot start the array's supervisor: "+err.Error(), b.Now().UTC()
			})
		}
		return "", fmt.Errorf("local backend: start the array's supervisor: %w", err)
	}
	pid := cmd.Process.Pid
	go cmd.Wait()
	start := startTime(pid)
	updateArray(ctx, path, func(a *Array) {
		if a.ShimPID == 0 {
			a.ShimPID, a.ShimStart = pid, start
		}
	})
	return backends.JobID(id), nil
}

// arraySupervised reports whether a pending element still has a
// supervisor that will start it (cache: one read per array per Query).
func (b *Backend) arraySupervised(array string, cache map[string]bool) bool {
	if v, ok := cache[array]; ok {
		return v
	}
	a, err := readArray(b.arrayPath(array))
	v := err == nil && (a.ShimPID == 0 && b.Now().Sub(a.Submit) < 10*time.Second || alive(a.ShimPID, a.ShimStart))
	cache[array] = v
	return v
}

// cancelArray cancels every element of an array: those not started never
// start, the running ones are ended by their supervisors.
func (b *Backend) cancelArray(ctx context.Context, id string) error {
	a, err := updateArray(ctx, b.arrayPath(id), func(a *Array) {
		if a.CancelAt.IsZero() {
			a.CancelAt = b.Now().UTC()
		}
	})
	if err != nil {
		return fmt.Errorf("local backend: cancel array %s: %w", id, err)
	}
	var errs []error
	for i := range a.Size {
		if err := b.Cancel(ctx, b.ElementID(backends.JobID(id), i)); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// RunArrayShim supervises a local array: it starts one supervisor per
// element in index order, at most max_running at a time, and returns
// when every element it started has ended. Elements cancelled before
// their turn are not started.
func RunArrayShim(ctx context.Context, path string) error {
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	signal.Ignore(syscall.SIGHUP, syscall.SIGPIPE)
	defer signal.Stop(sigs)
	self := os.Getpid()
	a, err := updateArray(ctx, path, func(a *Array) { a.ShimPID, a.ShimStart = self, startTime(self) })
	if err != nil {
		return fmt.Errorf("local-shim: %w", err)
	}
	dir := filepath.Dir(path)
	limit := a.MaxRunning
	if limit <= 0 {
		limit = a.Size
	}
	done := make(chan struct{}, a.Size)
	running := 0
	for i := 0; i < a.Size; i++ {
		for running >= limit {
			select {
			case <-done:
				running--
			case <-sigs:
				// stopped: the elements not started stay pending and are
				// reported vanished once this supervisor is gone
				return nil
			}
		}
		if cur, err := readArray(path); err == nil && !cur.CancelAt.IsZero() {
			break
		}
		jp := filepath.Join(dir, a.ID+"_"+strconv.Itoa(i)+".json")
		if j, err := readJob(jp); err != nil || j.State.Terminal() {
			continue
		}
		cmd := exec.Command(a.Shim[0], append(append([]string{}, a.Shim[1:]...), jp)...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		cmd.Dir = "/"
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		if err := cmd.Start(); err != nil {
			update(context.WithoutCancel(ctx), jp, func(j *Job) {
				j.State, j.Reason, j.End = backends.Failed, "cannot start the supervisor: "+err.Error(), time.Now().UTC()
			})
			continue
		}
		running++
		go func() { cmd.Wait(); done <- struct{}{} }()
	}
	for running > 0 {
		<-done
		running--
	}
	return nil
}
