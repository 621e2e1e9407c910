package main

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/rogpeppe/go-internal/testscript"
	"github.com/tether-hpc/tether/internal/pbsemu"
	"github.com/tether-hpc/tether/internal/pbsemu/pbsemutest"
)

// pbsSite writes a site file for an emulator instance.
func pbsSite(t *testing.T, srv *pbsemutest.Server, name string) string {
	p := filepath.Join(t.TempDir(), name+".toml")
	body := fmt.Sprintf(`version = 1
name = %q
backend = "pbs"
max_walltime = "1h"

[defaults]
walltime = "2m"

[mpi]
launcher = "mpiexec"
extra_args = ["--oversubscribe"]
env = { OMPI_ALLOW_RUN_AS_ROOT = "1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM = "1" }

# the emulator's knobs (PBSEMU_QSUB_FAULT, ...) are for its commands, not
# the jobs' environment or identity
[env]
deny = ["PBSEMU_*"]

[poll]
min_interval = "500ms"
max_interval = "2s"
max_queries_per_minute = 240
vanish_grace = "10s"

[pbs]
bin_dir = %q
env = { PBSEMU_HOME = %q }
`, name, srv.BinDir, srv.Home)
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

type pbsKey struct{}

// TestPBS runs the PBS state matrix through the CLI against the OpenPBS
// emulator (internal/pbsemu): one instance with job history, one without,
// one whose server goes down while runs wait, and the array script on
// servers of its own (with history and without).
func TestPBS(t *testing.T) {
	t.Parallel()
	for _, v := range []struct {
		name    string
		history bool
		dir     string
	}{{"history", true, "testdata/pbs"}, {"nohistory", false, "testdata/pbs"}, {"outage", true, "testdata/pbs-outage"},
		// an array of 200 fills the server's 8 CPUs for a while: on a
		// server of its own, it does not hold up the other scripts' jobs
		{"array-history", true, "testdata/pbs-array"}, {"array-nohistory", false, "testdata/pbs-array"}} {
		name, history := v.name, v.history
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			srv := pbsemutest.Start(t, pbsemutest.Options{NCPUs: 8, NodeName: "localhost", DisableHistory: !history,
				WalltimeCheckInterval: time.Second, KillDelay: 2 * time.Second,
				// workq, the default, without limits; short as qmgr's
				// "set queue short resources_max.walltime=00:02:00"
				Queues: []pbsemu.QueueConfig{{Name: "workq"}, {Name: "short", ResourcesMax: map[string]string{"walltime": "00:02:00", "ncpus": "4"}}},
				// the MoM's $enforce mem: a job over its mem request is killed (JOB_EXEC_KILL_MEM)
				Configure: func(c *pbsemu.Config) { c.EnforceMem = true }})
			site := pbsSite(t, srv, "pbs-"+name)
			p := scriptParams(t, v.dir)
			mpi := haveMPI(t) // here: Condition runs in the scripts' goroutines
			setup := p.Setup
			p.Setup = func(env *testscript.Env) error {
				if err := setup(env); err != nil {
					return err
				}
				env.Setenv("TETHER_SITE", site)
				env.Setenv("PBS_BIN", srv.BinDir)
				env.Setenv("PBSEMU_HOME", srv.Home)
				env.Setenv("HISTORY", fmt.Sprint(history))
				env.Values[pbsKey{}] = srv
				return nil
			}
			p.Condition = func(cond string) (bool, error) {
				switch cond {
				case "history":
					return history, nil
				case "mpi":
					return mpi, nil
				}
				return false, fmt.Errorf("unknown condition %q", cond)
			}
			p.Cmds["pbsserver"] = func(ts *testscript.TestScript, neg bool, args []string) {
				srv := ts.Value(pbsKey{}).(*pbsemutest.Server)
				// SetDown, not Down/Up: those fail the parent test, and
				// this runs in the script's goroutine
				switch {
				case len(args) == 1 && args[0] == "down":
					ts.Check(srv.SetDown(true))
				case len(args) == 1 && args[0] == "up":
					ts.Check(srv.SetDown(false))
				default:
					ts.Fatalf("usage: pbsserver down|up")
				}
			}
			testscript.Run(t, p)
		})
	}
}
