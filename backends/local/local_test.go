package local

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/tether-hpc/tether/backends"
	"github.com/tether-hpc/tether/rundir"
)

// The test binary is its own supervisor: "local.test local-shim JOBFILE"
// runs RunShim, as "tether local-shim JOBFILE" does.
func TestMain(m *testing.M) {
	if len(os.Args) == 3 && os.Args[1] == "local-shim" {
		if err := RunShim(context.Background(), os.Args[2]); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func newBackend(t *testing.T) *Backend {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	b, err := New(filepath.Join(t.TempDir(), "spool"), []string{self, "local-shim"}, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// request writes a job script running body.
func request(t *testing.T, tag, body string) backends.JobRequest {
	t.Helper()
	dir := t.TempDir()
	script := filepath.Join(dir, "job.sh")
	if err := os.WriteFile(script, []byte(body+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return backends.JobRequest{Name: "t", Tag: tag, Script: script, Dir: dir,
		Stdout: filepath.Join(dir, "stdout"), Stderr: filepath.Join(dir, "stderr"), Walltime: time.Minute}
}

// waitState polls Query until the job reaches a state that ok accepts.
func waitState(t *testing.T, b *Backend, id backends.JobID, ok func(backends.State) bool) backends.JobStatus {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var last backends.JobStatus
	for time.Now().Before(deadline) {
		m, err := b.Query(context.Background(), []backends.JobID{id})
		if err != nil {
			t.Fatal(err)
		}
		if st, found := m[id]; found {
			last = st
			if ok(st.State) {
				return st
			}
		}
		time.Sleep(10 * time.Millisecond) // poll interval, not synchronisation
	}
	t.Fatalf("job %s did not reach the state in time; last %+v", id, last)
	return last
}

func is(s backends.State) func(backends.State) bool {
	return func(x backends.State) bool { return x == s }
}

// cancelAtEnd cancels a job when the test ends, so no job outlives it.
func cancelAtEnd(t *testing.T, b *Backend, id backends.JobID) {
	t.Cleanup(func() {
		b.Cancel(context.Background(), id)
		waitState(t, b, id, backends.State.Terminal)
	})
}

func TestSubmitRunsJob(t *testing.T) {
	b := newBackend(t)
	id, err := b.Submit(context.Background(), request(t, "run-1.1", "echo hello; exit 3"))
	if err != nil {
		t.Fatal(err)
	}
	st := waitState(t, b, id, backends.State.Terminal)
	if st.State != backends.Failed || st.ExitCode == nil || *st.ExitCode != 3 {
		t.Errorf("final status %+v", st)
	}
	if got, found, err := b.FindByTag(context.Background(), "run-1.1"); err != nil || !found || got != id {
		t.Errorf("FindByTag: %q %v %v", got, found, err)
	}
}

// The supervisor has started, then recording its pid fails (here: the
// caller's context ends while another process holds the job's lock).
// The job runs: Submit must return its id, and the job must stay
// queryable and findable by its tag.
func TestSubmitKeepsStartedJobWhenRecordFails(t *testing.T) {
	b := newBackend(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var held *rundir.Lock
	b.afterShimStart = func(_ context.Context, jobPath string) {
		l, err := rundir.LockFile(context.Background(), lockPath(jobPath))
		if err != nil {
			t.Errorf("hook: %v", err)
			return
		}
		held = l
		cancel()
	}
	id, err := b.Submit(ctx, request(t, "run-2.1", "exit 0"))
	held.Unlock() // the supervisor may go on
	if err != nil || id == "" {
		t.Fatalf("Submit forgot the started job: id %q, err %v", id, err)
	}
	if held == nil {
		t.Fatal("the hook did not run")
	}
	if got, found, err := b.FindByTag(context.Background(), "run-2.1"); err != nil || !found || got != id {
		t.Errorf("FindByTag: %q %v %v", got, found, err)
	}
	st := waitState(t, b, id, backends.State.Terminal)
	if st.State != backends.Completed {
		t.Errorf("final status %+v", st)
	}
}

// Recovery looks for a job by tag before anything was ever submitted.
func TestFindByTagWithoutJobs(t *testing.T) {
	b := newBackend(t)
	ctx := context.Background()
	if id, found, err := b.FindByTag(ctx, "run-1.1"); err != nil || found || id != "" {
		t.Errorf("FindByTag on an empty spool: %q %v %v", id, found, err)
	}
	if m, err := b.Query(ctx, []backends.JobID{"1"}); err != nil || len(m) != 0 {
		t.Errorf("Query on an empty spool: %v %v", m, err)
	}
	if err := b.Cancel(ctx, "1"); err != nil {
		t.Errorf("Cancel on an empty spool: %v", err)
	}
	if _, err := os.Stat(b.jobsDir()); !os.IsNotExist(err) {
		t.Errorf("Cancel of an unknown job created the spool: %v", err)
	}
}

// Ids sort as numbers: job 10 is newer than job 2.
func TestFindByTagNewestFirst(t *testing.T) {
	b := newBackend(t)
	os.MkdirAll(b.jobsDir(), 0o755)
	for _, id := range []string{"2", "10", "3"} {
		tag := "run-1.1"
		if id == "3" {
			tag = "other"
		}
		if err := writeJob(b.jobPath(id), &Job{ID: id, Request: backends.JobRequest{Tag: tag}, State: backends.Failed}); err != nil {
			t.Fatal(err)
		}
	}
	if id, found, err := b.FindByTag(context.Background(), "run-1.1"); err != nil || !found || id != "10" {
		t.Errorf("FindByTag: %q %v %v, want job 10", id, found, err)
	}
}

func TestCancelIsIdempotent(t *testing.T) {
	b := newBackend(t)
	ctx := context.Background()
	id, err := b.Submit(ctx, request(t, "run-3.1", "exec sleep 300"))
	if err != nil {
		t.Fatal(err)
	}
	cancelAtEnd(t, b, id)
	waitState(t, b, id, is(backends.Running))
	if err := b.Cancel(ctx, id); err != nil {
		t.Fatal(err)
	}
	if err := b.Cancel(ctx, id); err != nil { // again, while it ends
		t.Errorf("second cancel: %v", err)
	}
	waitState(t, b, id, is(backends.Cancelled))
	if err := b.Cancel(ctx, id); err != nil {
		t.Errorf("cancel of a cancelled job: %v", err)
	}
	if err := b.Cancel(ctx, "999"); err != nil {
		t.Errorf("cancel of an unknown job: %v", err)
	}
	if err := b.Cancel(ctx, "../x"); err == nil {
		t.Errorf("cancel of an invalid id: no error")
	}

	done, err := b.Submit(ctx, request(t, "run-4.1", "exit 0"))
	if err != nil {
		t.Fatal(err)
	}
	waitState(t, b, done, backends.State.Terminal)
	if err := b.Cancel(ctx, done); err != nil {
		t.Errorf("cancel of a finished job: %v", err)
	}
	if st := waitState(t, b, done, backends.State.Terminal); st.State != backends.Completed {
		t.Errorf("a finished job changed on cancel: %+v", st)
	}
}

// A job cancelled before its supervisor recorded itself never starts.
func TestCancelBeforeSupervisorStarts(t *testing.T) {
	b := newBackend(t)
	ctx := context.Background()
	req := request(t, "run-5.1", "touch ran")
	var cerr error
	// before the supervisor starts (a hook after its start raced a
	// loaded machine: the supervisor could have started the wrapper)
	b.beforeShimStart = func(_ context.Context, jobPath string) {
		// the supervisor has not recorded itself yet, nor has Submit
		cerr = b.Cancel(ctx, backends.JobID(filepath.Base(jobPath[:len(jobPath)-len(".json")])))
	}
	id, err := b.Submit(ctx, req)
	if err != nil || cerr != nil {
		t.Fatalf("submit %v, cancel %v", err, cerr)
	}
	st := waitState(t, b, id, backends.State.Terminal)
	if st.State != backends.Cancelled {
		t.Errorf("final status %+v", st)
	}
	// the supervisor has seen the cancel and ended without the wrapper
	deadline := time.Now().Add(30 * time.Second)
	for {
		j, err := readJob(b.jobPath(string(id)))
		if err != nil {
			t.Fatal(err)
		}
		if j.ShimPID != 0 && !alive(j.ShimPID, j.ShimStart) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("supervisor still running: %+v", j)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := os.Stat(filepath.Join(req.Dir, "ran")); err == nil {
		t.Errorf("the cancelled job ran")
	}
}

// A supervisor that died of the cancel before it could record a final
// state leaves a cancelled job, not a vanished one.
func TestQueryCancelledJobWithoutSupervisor(t *testing.T) {
	b := newBackend(t)
	os.MkdirAll(b.jobsDir(), 0o755)
	gone := exec.Command("true")
	if err := gone.Run(); err != nil {
		t.Fatal(err)
	}
	j := &Job{ID: "1", State: backends.Pending, Submit: time.Now().Add(-time.Minute), ShimPID: gone.Process.Pid, ShimStart: 1}
	writeJob(b.jobPath("1"), j)
	if m, _ := b.Query(context.Background(), []backends.JobID{"1"}); len(m) != 0 {
		t.Errorf("vanished job reported: %+v", m)
	}
	j.CancelAt = time.Now()
	writeJob(b.jobPath("1"), j)
	if m, _ := b.Query(context.Background(), []backends.JobID{"1"}); m["1"].State != backends.Cancelled {
		t.Errorf("cancelled job without supervisor: %+v", m)
	}
}

// A supervisor that writes the job's final state and exits between
// Query's read of the record and its look at the supervisor's pid: the
// job is reported ended, not vanished (seen under load as a job decided
// from its exit file as if it had left the scheduler).
func TestQuerySupervisorEndsBetweenReadAndLook(t *testing.T) {
	b, err := New(t.TempDir(), []string{"/bin/false"}, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(b.jobsDir(), 0o700); err != nil {
		t.Fatal(err)
	}
	code := 137
	live := &Job{ID: "7", State: backends.Running, ShimPID: 1 << 22, ShimStart: 1, Submit: time.Now().Add(-time.Minute), Start: time.Now().Add(-time.Minute)}
	if err := writeJob(b.jobPath("7"), live); err != nil {
		t.Fatal(err)
	}
	b.afterRead = func(path string) {
		ended := *live
		ended.State, ended.ExitCode, ended.Signal, ended.End = backends.OutOfMemory, &code, 9, time.Now()
		if err := writeJob(path, &ended); err != nil {
			t.Error(err)
		}
	}
	got, err := b.Query(context.Background(), []backends.JobID{"7"})
	if err != nil {
		t.Fatal(err)
	}
	if st, ok := got["7"]; !ok || st.State != backends.OutOfMemory {
		t.Errorf("%+v %v, want OUT_OF_MEMORY", st, ok)
	}
}

// Query keeps the job records it read while their files are unchanged; a
// record rewritten (a new file renamed in) is read again even when its
// size and mtime are the same as before (here RUNNING and PENDING, of one
// length, with the mtime set back to one old time after every write).
func TestQuerySeesEveryRewrite(t *testing.T) {
	b := newBackend(t)
	b.settle = time.Nanosecond // keep every record read (the real 2 s would keep none here)
	if err := os.MkdirAll(b.jobsDir(), 0o755); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-time.Hour)
	ids := []backends.JobID{"1", "2", "3", "4"}
	want := map[backends.JobID]backends.State{}
	write := func(id backends.JobID, st backends.State) {
		t.Helper()
		j := &Job{ID: string(id), State: st, Submit: time.Now()} // no supervisor yet: supervised for 10 s
		if err := writeJob(b.jobPath(string(id)), j); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(b.jobPath(string(id)), old, old); err != nil {
			t.Fatal(err)
		}
		want[id] = st
	}
	for _, id := range ids {
		write(id, backends.Pending)
	}
	states := []backends.State{backends.Pending, backends.Running}
	for round := range 40 {
		if round > 0 {
			id := ids[round%len(ids)]
			write(id, states[(round/len(ids))%2])
		}
		got, err := b.Query(context.Background(), ids)
		if err != nil {
			t.Fatal(err)
		}
		for _, id := range ids {
			if got[id].State != want[id] {
				t.Fatalf("round %d: job %s %s, want %s", round, id, got[id].State, want[id])
			}
		}
	}
	if len(b.seen) != len(ids) {
		t.Errorf("%d records kept, want %d (the settled, live ones)", len(b.seen), len(ids))
	}
}
