package schema_test

import (
	"testing"

	"github.com/tether-hpc/tether/launcher"
	"github.com/tether-hpc/tether/schema"
)

// Validation checks a warning against the launcher the wrapper will run:
// schema's Task.Launcher and launcher.ChooseLauncher must agree.
func TestLauncherMatchesChooseLauncher(t *testing.T) {
	for _, backend := range []string{schema.BackendSbatch, schema.BackendPBS, schema.BackendLocal} {
		for _, siteLauncher := range []string{"", schema.LauncherMpirun, schema.LauncherNone} {
			body := "name = 's'\nbackend = '" + backend + "'\n"
			if siteLauncher != "" {
				body += "[mpi]\nlauncher = '" + siteLauncher + "'\n"
			}
			site, err := schema.ParseSite("site.toml", []byte(body))
			if err != nil {
				t.Fatal(err)
			}
			for _, l := range []string{"", schema.LauncherAuto, schema.LauncherSrun, schema.LauncherMpiexec, schema.LauncherMpirun, schema.LauncherNone} {
				for _, r := range []schema.Resources{{}, {NTasks: 1}, {NTasks: 4}, {Nodes: 2}, {Nodes: 1, NTasksPerNode: 2}, {Nodes: 2, NTasks: 2}} {
					task := schema.DefaultTask()
					task.MPI.Launcher = l
					task.Resources = r
					if got, want := task.Launcher(site), launcher.ChooseLauncher(&task, site); got != want {
						t.Errorf("%s site (launcher %q), task launcher %q, %+v: schema says %q, launcher says %q", backend, siteLauncher, l, r, got, want)
					}
				}
			}
		}
	}
}
