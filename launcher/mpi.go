package launcher

import (
	"fmt"
	"strconv"

	"github.com/tether-hpc/tether/schema"
)

// tetherEnv is what MPI launchers must carry to remote ranks.
var tetherEnv = []string{"TETHER_RUN_ID", "TETHER_RUN_DIR", "TETHER_STATUS_FILE", "TETHER_ATTEMPT", "TETHER_ATTEMPT_DIR", "PATH"}

// ChooseLauncher resolves "auto": the site's launcher for multi-task or
// multi-node Tasks, none otherwise.
func ChooseLauncher(t *schema.Task, site *schema.Site) string {
	l := t.MPI.Launcher
	if l == "" || l == schema.LauncherAuto {
		if t.Resources.TotalTasks() > 1 || t.Resources.Nodes > 1 {
			return site.MPI.Launcher
		}
		return schema.LauncherNone
	}
	return l
}

// launchWords builds the command line that starts the Task's command
// through its MPI launcher.
func launchWords(t *schema.Task, site *schema.Site, command []string) ([]word, error) {
	r := t.Resources
	n := strconv.Itoa(r.TotalTasks())
	var w []word
	switch ChooseLauncher(t, site) {
	case schema.LauncherNone:
		return lits(command...), nil
	case schema.LauncherSrun:
		w = lits("srun", "--mpi="+site.MPI.SrunMPI, "--ntasks="+n)
		if r.Nodes > 0 {
			w = append(w, lit("--nodes="+strconv.Itoa(r.Nodes)))
		}
		if r.NTasksPerNode > 0 {
			w = append(w, lit("--ntasks-per-node="+strconv.Itoa(r.NTasksPerNode)))
		}
		if r.CPUsPerTask > 0 {
			w = append(w, lit("--cpus-per-task="+strconv.Itoa(r.CPUsPerTask)))
		}
	case schema.LauncherMpirun:
		w = lits("mpirun", "-np", n)
		if r.NTasksPerNode > 0 {
			w = append(w, lits("--map-by", "ppr:"+strconv.Itoa(r.NTasksPerNode)+":node")...)
		}
		for _, k := range tetherEnv {
			w = append(w, lits("-x", k)...)
		}
		for _, k := range sortedKeys(t.Env) {
			w = append(w, lits("-x", k)...)
		}
	case schema.LauncherMpiexec:
		w = lits("mpiexec", "-n", n)
		if site.MPI.MpiexecStyle == "pals" {
			if r.NTasksPerNode > 0 {
				w = append(w, lits("--ppn", strconv.Itoa(r.NTasksPerNode))...)
			}
		} else {
			w = append(w, lit("--hostfile"), word{env: "PBS_NODEFILE"})
		}
	default:
		return nil, fmt.Errorf("unknown MPI launcher %q", t.MPI.Launcher)
	}
	w = append(w, lits(site.MPI.ExtraArgs...)...)
	w = append(w, lits(t.MPI.Args...)...)
	return append(w, lits(command...)...), nil
}
