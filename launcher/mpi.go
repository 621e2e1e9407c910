package launcher

import (
	"fmt"
	"slices"
	"strconv"

	"github.com/tether-hpc/tether/schema"
)

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

// rankEnv is the environment every rank of a Task with cpus_per_task gets
// from the wrapper: its OpenMP threads, placed on the rank's own cores
// (unless the site binds nothing: unbound ranks placing their threads
// would stack them on the same cores). The site's [mpi] env and the
// Task's env, exported after, win.
func rankEnv(t *schema.Task, site *schema.Site) map[string]string {
	n := t.Resources.CPUsPerTask
	if n <= 0 {
		return nil
	}
	env := map[string]string{"OMP_NUM_THREADS": strconv.Itoa(n)}
	if site.MPI.Bind != schema.BindNone {
		env["OMP_PLACES"], env["OMP_PROC_BIND"] = "cores", "close"
	}
	return env
}

// exported lists the variables the wrapper exports for the Task (its own,
// the OpenMP ones, the site's [mpi] env, the Task's env and env_prepend):
// what an MPI launcher must carry to every rank on every node.
func exported(t *schema.Task, site *schema.Site, resumed, tetherBin bool) []string {
	names := []string{"TETHER_RUN_ID", "TETHER_RUN_DIR", "TETHER_STATUS_FILE", "TETHER_ATTEMPT", "TETHER_ATTEMPT_DIR"}
	if resumed {
		names = append(names, "TETHER_RESUME_FROM")
	}
	if t.Signals.WarnSignalName() != "" {
		names = append(names, "TETHER_WARN_SIGNAL")
	}
	if tetherBin {
		names = append(names, "TETHER_BIN")
	}
	names = append(names, "PATH")
	var rest []string
	for _, m := range []map[string]string{rankEnv(t, site), site.MPI.Env, t.Env, t.EnvPrepend} {
		for k := range m {
			if !slices.Contains(names, k) {
				rest = append(rest, k)
			}
		}
	}
	slices.Sort(rest)
	return append(names, slices.Compact(rest)...)
}

// launchWords builds the command line that starts the Task's command
// through its MPI launcher. env names the variables every rank must get.
func launchWords(t *schema.Task, site *schema.Site, command, env []string) ([]word, error) {
	r := t.Resources
	n := strconv.Itoa(r.TotalTasks())
	cpt := r.CPUsPerTask
	bind := site.MPI.Bind
	var w []word
	switch ChooseLauncher(t, site) {
	case schema.LauncherNone:
		return lits(command...), nil
	case schema.LauncherSrun:
		// --export=ALL: sbatch --export=NAMES|NONE leaves SLURM_EXPORT_ENV
		// in the job, which would keep the wrapper's variables from srun's
		// tasks
		w = lits("srun", "--mpi="+site.MPI.SrunMPI, "--export=ALL", "--ntasks="+n)
		if r.Nodes > 0 {
			w = append(w, lit("--nodes="+strconv.Itoa(r.Nodes)))
		}
		if r.NTasksPerNode > 0 {
			w = append(w, lit("--ntasks-per-node="+strconv.Itoa(r.NTasksPerNode)))
		}
		if cpt > 0 {
			// Slurm >= 22.05: srun does not take --cpus-per-task from sbatch
			w = append(w, lit("--cpus-per-task="+strconv.Itoa(cpt)))
		}
		if r.GPUsPerTask > 0 {
			// explicit: a step gets the job's GPUs per task only through
			// SLURM_GPUS_PER_TASK, which --export and prologues can lose
			w = append(w, lit("--gpus-per-task="+strconv.Itoa(r.GPUsPerTask)))
		}
		if bind != "" {
			w = append(w, lit("--cpu-bind="+bind))
		}
	case schema.LauncherMpirun:
		w = append(lits("mpirun", "-np", n), openMPIPlacement(r, bind)...)
		for _, k := range env {
			w = append(w, lits("-x", k)...)
		}
	case schema.LauncherMpiexec:
		w = lits("mpiexec", "-n", n)
		if site.MPI.MpiexecStyle == "pals" {
			// Cray PALS passes the whole environment by default
			if r.NTasksPerNode > 0 {
				w = append(w, lits("--ppn", strconv.Itoa(r.NTasksPerNode))...)
			}
			switch {
			case bind == schema.BindNone:
				w = append(w, lits("--cpu-bind", "none")...)
			case cpt > 0:
				w = append(w, lits("--depth", strconv.Itoa(cpt), "--cpu-bind", "depth")...)
			}
		} else {
			// OpenMPI's mpiexec on the PBS allocation
			w = append(w, lit("--hostfile"), word{env: "PBS_NODEFILE"})
			w = append(w, openMPIPlacement(r, bind)...)
			for _, k := range env {
				w = append(w, lits("-x", k)...)
			}
		}
	default:
		return nil, fmt.Errorf("unknown MPI launcher %q", t.MPI.Launcher)
	}
	w = append(w, lits(site.MPI.ExtraArgs...)...)
	w = append(w, lits(t.MPI.Args...)...)
	return append(w, lits(command...)...), nil
}

// openMPIPlacement maps ranks for OpenMPI: ntasks_per_node ranks per node,
// and cpus_per_task cores (processing elements) each, bound to them;
// bind = "none" binds nothing.
func openMPIPlacement(r schema.Resources, bind string) []word {
	mapBy := ""
	switch {
	case r.NTasksPerNode > 0:
		mapBy = "ppr:" + strconv.Itoa(r.NTasksPerNode) + ":node"
	case r.CPUsPerTask > 0 && bind != schema.BindNone:
		mapBy = "slot"
	}
	if r.CPUsPerTask > 0 && bind != schema.BindNone {
		mapBy += ":PE=" + strconv.Itoa(r.CPUsPerTask)
	}
	var w []word
	if mapBy != "" {
		w = lits("--map-by", mapBy)
	}
	switch bind {
	case schema.BindNone:
		w = append(w, lits("--bind-to", "none")...)
	case schema.BindCores:
		w = append(w, lits("--bind-to", "core")...)
	}
	return w
}
