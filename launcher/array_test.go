package launcher_test

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/tether-hpc/tether/backends"
	"github.com/tether-hpc/tether/backends/fake"
	"github.com/tether-hpc/tether/launcher"
	"github.com/tether-hpc/tether/rundir"
	"github.com/tether-hpc/tether/schema"
)

// arrayFake is the fake scheduler with job arrays: one Submit per array.
type arrayFake struct{ *fake.Backend }

func (b arrayFake) SubmitArray(ctx context.Context, req backends.JobRequest, _ backends.ArraySpec) (backends.JobID, error) {
	return b.Submit(ctx, req)
}
func (arrayFake) ElementID(a backends.JobID, i int) backends.JobID {
	return backends.JobID(string(a) + "_" + strconv.Itoa(i))
}
func (arrayFake) ArrayIndexVar() string { return "SLURM_ARRAY_TASK_ID" }

func arrayRun(tb testing.TB, n, maxSize int) (*launcher.Submitter, rundir.Run, *schema.RunRecord, *fake.Backend) {
	site, err := schema.ParseSite("s.toml", []byte("name='s'\nbackend='sbatch'\n[submit]\nmax_array_size = "+strconv.Itoa(maxSize)+"\n"))
	if err != nil {
		tb.Fatal(err)
	}
	store, err := rundir.Open(filepath.Join(tb.TempDir(), "state"))
	if err != nil {
		tb.Fatal(err)
	}
	be := fake.New()
	task, err := schema.ParseTask("t.toml", []byte("name='t'\ncommand=['true']\n[resources]\nwalltime='1m'\n[array]\ncount="+strconv.Itoa(n)+"\n"), nil, site)
	if err != nil {
		tb.Fatal(err)
	}
	rec := &schema.RunRecord{RunID: rundir.NewRunID("t", time.Now()), Site: site.Name, Backend: site.Backend, Task: *task}
	run, err := store.CreateRun(rec)
	if err != nil {
		tb.Fatal(err)
	}
	sub := &launcher.Submitter{Store: store, Site: site, Backend: arrayFake{be}, TetherPath: "/usr/bin/tether", Now: time.Now}
	return sub, run, rec, be
}

// An array of 7 elements with max_array_size 3 is 3 submits; every
// element's first attempt gets its array's element id and is active; a
// second SubmitArray (a reattach) sends nothing.
func TestSubmitArrayChunks(t *testing.T) {
	sub, run, rec, be := arrayRun(t, 7, 3)
	if err := sub.SubmitArray(context.Background(), run, rec); err != nil {
		t.Fatal(err)
	}
	if be.Submits.Load() != 3 || len(rec.Array.Chunks) != 3 {
		t.Fatalf("%d submits, %d chunks; want 3", be.Submits.Load(), len(rec.Array.Chunks))
	}
	active, err := sub.Store.Active()
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []string{"1_0", "1_1", "1_2", "2_0", "2_1", "2_2", "3_0"} {
		el := schema.ElementRunID(run.ID, i)
		erec, err := sub.Store.Run(el).Load()
		if err != nil {
			t.Fatal(err)
		}
		if got := erec.Attempts[0].JobID; got != want || active[el] != want || !erec.Attempts[0].InArray {
			t.Errorf("element %d: job %q active %q, want %s", i, got, active[el], want)
		}
	}
	if err := sub.SubmitArray(context.Background(), run, rec); err != nil || be.Submits.Load() != 3 {
		t.Fatalf("again: %v, %d submits", err, be.Submits.Load())
	}
	// an element's record lost after its array was sent: recording the
	// chunk again writes it, and sends nothing
	el := sub.Store.Run(schema.ElementRunID(run.ID, 4))
	if err := os.Remove(el.RunJSON()); err != nil {
		t.Fatal(err)
	}
	rec.Array.Chunks[1].Recorded = false
	if err := sub.SubmitArray(context.Background(), run, rec); err != nil || be.Submits.Load() != 3 {
		t.Fatalf("re-record: %v, %d submits", err, be.Submits.Load())
	}
	if erec, err := el.Load(); err != nil || erec.Attempts[0].JobID != "2_1" {
		t.Fatalf("element 4 after re-recording: %+v %v", erec, err)
	}
}

// BenchmarkSubmitArray1000 is tether's own cost of submitting an array of
// 1,000 elements (its run directories, wrappers and records), with a
// scheduler that answers at once.
func BenchmarkSubmitArray1000(b *testing.B) {
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		sub, run, rec, _ := arrayRun(b, 1000, 1001)
		b.StartTimer()
		if err := sub.SubmitArray(context.Background(), run, rec); err != nil {
			b.Fatal(err)
		}
	}
}
