package pbs

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/tether-hpc/tether/backends"
	"github.com/tether-hpc/tether/internal/pbsemu/pbsemutest"
	"github.com/tether-hpc/tether/monitor"
	"github.com/tether-hpc/tether/rundir"
)

func TestMain(m *testing.M) { os.Exit(pbsemutest.Main(m)) }

// BenchmarkPollCalls200: qstat calls per poll cycle with 200 live runs
// against the OpenPBS emulator (target 1).
func BenchmarkPollCalls200(b *testing.B) {
	srv := pbsemutest.Start(b, pbsemutest.Options{NCPUs: 2})
	be := New(srv.BinDir, "", map[string]string{"PBSEMU_HOME": srv.Home})
	store, err := rundir.Open(filepath.Join(b.TempDir(), "state"))
	if err != nil {
		b.Fatal(err)
	}
	script := filepath.Join(store.Dir, "job.sh")
	os.WriteFile(script, []byte("#!/bin/bash\ntrue\n"), 0o755)
	ctx := context.Background()
	var ids []backends.JobID
	for i := 0; i < 200; i++ {
		id, err := be.Submit(ctx, backends.JobRequest{Name: "bench", Stdout: "/dev/null", Stderr: "/dev/null", Script: script,
			Walltime: time.Minute, ExtraArgs: []string{"-h"}})
		if err != nil {
			b.Fatal(err)
		}
		ids = append(ids, id)
		store.SetActive(fmt.Sprintf("run-%03d", i), string(id), "")
	}
	p := &monitor.Poller{Store: store, Backend: be, Now: time.Now}
	c0 := be.Calls()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := p.Status(ctx, ids[:1], 0); err != nil {
			b.Fatal(err)
		}
		for _, id := range ids {
			snap, err := p.Status(ctx, []backends.JobID{id}, time.Hour)
			if err != nil {
				b.Fatal(err)
			}
			if snap.Jobs[id].State != backends.Pending {
				b.Fatalf("job %s: %+v", id, snap.Jobs[id])
			}
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(be.Calls()-c0)/float64(b.N), "qstat-calls/poll")
}
