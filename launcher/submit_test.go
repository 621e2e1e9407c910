package launcher_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tether-hpc/tether/backends"
	"github.com/tether-hpc/tether/backends/fake"
	"github.com/tether-hpc/tether/launcher"
	"github.com/tether-hpc/tether/rundir"
	"github.com/tether-hpc/tether/schema"
)

// limited turns the first refuse submits away as a QOS submit limit does.
type limited struct {
	*fake.Backend
	refuse atomic.Int32
}

func (l *limited) Submit(ctx context.Context, req backends.JobRequest) (backends.JobID, error) {
	if l.refuse.Add(-1) >= 0 {
		return "", fmt.Errorf("%w: %w: %w: sbatch: error: QOSMaxSubmitJobPerUserLimit", backends.ErrSubmitLimit, backends.ErrNotSent, backends.ErrUnavailable)
	}
	return l.Backend.Submit(ctx, req)
}

func newRun(t *testing.T, store *rundir.Store, site *schema.Site) (rundir.Run, *schema.RunRecord) {
	t.Helper()
	task := schema.DefaultTask()
	task.Name, task.Command, task.Workdir = "t", []string{"true"}, t.TempDir()
	task.Resources.Walltime = schema.Duration(time.Minute)
	rec := &schema.RunRecord{RunID: rundir.NewRunID("t", time.Now()), Site: site.Name, Backend: site.Backend, Task: task}
	run, err := store.CreateRun(rec)
	if err != nil {
		t.Fatal(err)
	}
	return run, rec
}

// A submit turned away by a limit on submitted jobs is waited out and
// sent again (saying so), never failed; with no wait allowed (the
// monitor) it comes back not sent, for a later look to send again.
func TestSubmitWaitsOutASubmitLimit(t *testing.T) {
	site, err := schema.ParseSite("s.toml", []byte("name='s'\nbackend='sbatch'\n"))
	if err != nil {
		t.Fatal(err)
	}
	store, err := rundir.Open(filepath.Join(t.TempDir(), "state"))
	if err != nil {
		t.Fatal(err)
	}
	be := &limited{Backend: fake.New()}
	be.refuse.Store(3)
	var log bytes.Buffer
	sub := &launcher.Submitter{Store: store, Site: site, Backend: be, TetherPath: "/usr/bin/tether", Now: time.Now,
		LimitWait: time.Minute, LimitBackoff: time.Millisecond, Log: slog.New(slog.NewTextHandler(&log, nil))}
	run, rec := newRun(t, store, site)
	a, err := sub.Submit(context.Background(), run, rec, schema.Attempt{Reason: "first attempt", Generation: 1})
	if err != nil || a.JobID == "" || be.Submits.Load() != 1 {
		t.Fatalf("%+v %v (%d submits)", a, err, be.Submits.Load())
	}
	if n := strings.Count(log.String(), "waiting before sending the job again"); n != 3 {
		t.Errorf("%d warnings, want 3:\n%s", n, log.String())
	}

	sub.LimitWait = 0
	be.refuse.Store(1)
	run2, rec2 := newRun(t, store, site)
	_, err = sub.Submit(context.Background(), run2, rec2, schema.Attempt{Reason: "first attempt", Generation: 1})
	if !errors.Is(err, backends.ErrSubmitLimit) || errors.Is(err, backends.ErrRejected) {
		t.Fatalf("no wait: %v", err)
	}
	if cur := rec2.Current(); cur == nil || !cur.Unsent || cur.JobID != "" {
		t.Errorf("the attempt is not marked unsent: %+v", cur)
	}
}

// Pace hands out slots 1/rate apart to every submitter of the state dir.
func TestPaceSpacesSubmits(t *testing.T) {
	now := time.Unix(2e9, 0)
	path := filepath.Join(t.TempDir(), "poll", "submit-s.json")
	a := &launcher.Pace{Path: path, Rate: 4, Now: func() time.Time { return now }}
	b := &launcher.Pace{Path: path, Rate: 4, Now: func() time.Time { return now }} // another process
	var slots []time.Time
	for i := 0; i < 4; i++ {
		p := a
		if i%2 == 1 {
			p = b
		}
		s, err := launcher.TakeSlot(p, context.Background())
		if err != nil {
			t.Fatal(err)
		}
		slots = append(slots, s)
	}
	for i, s := range slots {
		if want := now.Add(time.Duration(i) * 250 * time.Millisecond); !s.Equal(want) {
			t.Errorf("slot %d at %v, want %v", i, s.Sub(now), want.Sub(now))
		}
	}
	// after a pause the next slot is now, not in the past
	now = now.Add(time.Hour)
	if s, _ := launcher.TakeSlot(a, context.Background()); !s.Equal(now) {
		t.Errorf("after a pause: %v", s.Sub(now))
	}
	var off *launcher.Pace
	if err := off.Wait(context.Background()); err != nil {
		t.Error(err)
	}
}

// maybeLimited answers every submit as slurmrestd answers a QOS limit it
// does not name.
type maybeLimited struct{ *fake.Backend }

func (maybeLimited) Submit(context.Context, backends.JobRequest) (backends.JobID, error) {
	return "", fmt.Errorf("%w: %w: %w: %w: submit: Job violates accounting/QOS policy (Slurm error 2050)",
		backends.ErrMaybeSubmitLimit, backends.ErrSubmitLimit, backends.ErrNotSent, backends.ErrUnavailable)
}

// A refusal that may be a submit limit or a size/time limit is waited out
// for MaybeLimitWait only, then taken as the refusal it then is (exit 2).
func TestMaybeSubmitLimitIsBounded(t *testing.T) {
	site, err := schema.ParseSite("s.toml", []byte("name='s'\nbackend='slurmrest'\n[slurmrest]\nurl='unix:///x.sock'\n"))
	if err != nil {
		t.Fatal(err)
	}
	store, err := rundir.Open(filepath.Join(t.TempDir(), "state"))
	if err != nil {
		t.Fatal(err)
	}
	sub := &launcher.Submitter{Store: store, Site: site, Backend: maybeLimited{fake.New()}, TetherPath: "/usr/bin/tether", Now: time.Now,
		LimitWait: time.Hour, LimitBackoff: time.Millisecond, MaybeLimitWait: 20 * time.Millisecond}
	run, rec := newRun(t, store, site)
	_, err = sub.Submit(context.Background(), run, rec, schema.Attempt{Reason: "first attempt", Generation: 1})
	if !errors.Is(err, backends.ErrRejected) || !strings.Contains(err.Error(), "still refused after") {
		t.Errorf("%v", err)
	}
}
