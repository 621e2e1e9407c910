package schema

import (
	"fmt"
	"strings"
)

// ReservedEnvNames is the one list of names a Task's env and env_prepend
// and a site's [mpi] env may not set (and a Task's pass_env may not
// pass): bash or the wrapper own them, or the scheduler sets them for the
// job. A glob ends in '*'. The README's task reference repeats the
// globs; TestReservedEnvInREADME keeps the two in step.
//
// Only what the scheduler sets to describe the job, its allocation and
// its ranks is here; variables users set on purpose to tune a launcher
// (SLURM_CPU_BIND, SLURM_MPI_TYPE, SRUN_*, OMPI_MCA_*, OMP_*, PATH) stay
// allowed.
var ReservedEnvNames = []struct{ Glob, Why string }{
	// tether and the wrapper
	{"TETHER_*", "names starting with TETHER_ are reserved for tether (the wrapper sets them)"},
	{"__tether_*", "names starting with __tether_ belong to the wrapper"},
	// bash: the wrapper is a bash script and exports the Task's env in
	// its own shell
	{"SECONDS", "bash owns SECONDS (the wrapper times the Task with it)"},
	{"BASHPID", "bash owns BASHPID (the wrapper reads its own pid from it)"},
	{"IFS", "IFS would change how the wrapper splits words"},
	{"SHELLOPTS", "SHELLOPTS is read-only in bash (the wrapper's export would fail) and sets the shell options of every bash it starts"},
	{"BASHOPTS", "BASHOPTS is read-only in bash (the wrapper's export would fail) and sets the shell options of every bash it starts"},
	{"BASH_ENV", "BASH_ENV would make every bash the wrapper starts read a file first"},
	{"ENV", "ENV would make shells the wrapper starts read a file first"},
	{"BASH_XTRACEFD", "bash owns BASH_XTRACEFD (it would move or close the wrapper's trace)"},
	{"PS4", "PS4 would change the wrapper's trace output"},
	{"POSIXLY_CORRECT", "POSIXLY_CORRECT would switch the wrapper's bash to POSIX mode"},
	{"BASH_COMPAT", "BASH_COMPAT would change how the wrapper's bash behaves"},
	{"BASH_VERSINFO", "BASH_VERSINFO is read-only in bash (the wrapper's export would fail)"},
	{"UID", "UID is read-only in bash (the wrapper's export would fail)"},
	{"EUID", "EUID is read-only in bash (the wrapper's export would fail)"},
	{"PPID", "PPID is read-only in bash (the wrapper's export would fail)"},
	// Slurm: the job, its allocation, its steps and ranks
	{"SLURM_RESTART_COUNT", "Slurm sets SLURM_RESTART_COUNT (the wrapper reads it to notice a requeued job)"},
	{"SLURM_JOB_*", "Slurm sets the job's SLURM_JOB_* variables"},
	{"SLURM_JOBID", "Slurm sets the job's SLURM_JOBID"},
	{"SLURM_ARRAY_*", "Slurm sets the job's SLURM_ARRAY_* variables"},
	{"SLURM_STEP_*", "Slurm sets the step's SLURM_STEP_* variables"},
	{"SLURM_STEPID", "Slurm sets the step's SLURM_STEPID"},
	{"SLURM_SUBMIT_*", "Slurm sets the job's SLURM_SUBMIT_* variables"},
	{"SLURM_NODELIST", "Slurm sets the job's SLURM_NODELIST"},
	{"SLURM_NNODES", "Slurm sets SLURM_NNODES from the Task's resources, and srun reads it (set resources.nodes)"},
	{"SLURM_NTASKS", "Slurm sets SLURM_NTASKS from the Task's resources, and srun reads it (set resources.ntasks)"},
	{"SLURM_NPROCS", "Slurm sets SLURM_NPROCS (SLURM_NTASKS) from the Task's resources, and srun reads it (set resources.ntasks)"},
	{"SLURM_NTASKS_PER_NODE", "Slurm sets SLURM_NTASKS_PER_NODE from the Task's resources, and srun reads it (set resources.ntasks_per_node)"},
	{"SLURM_TASKS_PER_NODE", "Slurm sets the job's SLURM_TASKS_PER_NODE"},
	{"SLURM_CPUS_PER_TASK", "Slurm sets SLURM_CPUS_PER_TASK from the Task's resources, and srun reads it (set resources.cpus_per_task)"},
	{"SLURM_CPUS_ON_NODE", "Slurm sets SLURM_CPUS_ON_NODE for the job"},
	{"SLURM_PROCID", "Slurm sets SLURM_PROCID for each rank"},
	{"SLURM_LOCALID", "Slurm sets SLURM_LOCALID for each rank"},
	{"SLURM_NODEID", "Slurm sets SLURM_NODEID for each rank"},
	{"SLURM_GTIDS", "Slurm sets SLURM_GTIDS for each node's ranks"},
	{"SLURM_TASK_PID", "Slurm sets SLURM_TASK_PID for each rank"},
	// PBS: the job, its hosts, and the TM interface ranks start through
	{"PBS_JOBID", "PBS sets the job's PBS_JOBID"},
	{"PBS_JOBNAME", "PBS sets the job's PBS_JOBNAME"},
	{"PBS_JOBDIR", "PBS sets the job's PBS_JOBDIR"},
	{"PBS_NODEFILE", "PBS sets PBS_NODEFILE (mpiexec reads the job's hosts from it)"},
	{"PBS_O_*", "PBS sets the job's PBS_O_* variables"},
	{"PBS_ENVIRONMENT", "PBS sets PBS_ENVIRONMENT"},
	{"PBS_QUEUE", "PBS sets the job's PBS_QUEUE"},
	{"PBS_ARRAY_*", "PBS sets the job's PBS_ARRAY_* variables"},
	{"PBS_TASKNUM", "PBS sets PBS_TASKNUM"},
	{"PBS_NODENUM", "PBS sets PBS_NODENUM"},
	{"PBS_MOMPORT", "PBS sets PBS_MOMPORT (MPI launchers reach the job's MoMs through it)"},
	{"PBS_JOBCOOKIE", "PBS sets PBS_JOBCOOKIE (MPI launchers start ranks with it)"},
}

// ReservedEnv says why a Task (or a site's [mpi] env) may not set name, or
// "" when it may. PATH may be set (the wrapper keeps its own PATH for its
// tools; env_prepend adds to the job's).
func ReservedEnv(name string) string {
	for _, r := range ReservedEnvNames {
		if p, ok := strings.CutSuffix(r.Glob, "*"); ok && strings.HasPrefix(name, p) || r.Glob == name {
			return r.Why
		}
	}
	return ""
}

// reservedPassEnv says why a pass_env entry (a name, or PREFIX*) may not
// pass the submitter's variables, or "": when the name is reserved, or
// every name the glob matches is (pass_env = ["SLURM_JOB_*"]). A wider
// glob (SLURM_*) is left to the site's policy.
func reservedPassEnv(g string) string {
	p, glob := strings.CutSuffix(g, "*")
	if !glob {
		return ReservedEnv(g)
	}
	for _, r := range ReservedEnvNames {
		if rp, ok := strings.CutSuffix(r.Glob, "*"); ok && strings.HasPrefix(p, rp) {
			return r.Why
		}
	}
	return ""
}

// Launcher is the MPI launcher the Task uses on site: its own [mpi]
// launcher, or for "auto" the site's when the Task has more than one
// rank or node, else none. It matches launcher.ChooseLauncher (a test
// keeps the two in step). Without a site, "auto" gives "".
func (t *Task) Launcher(site *Site) string {
	l, _ := t.launcherFrom(site)
	return l
}

// launcherFrom is Launcher, and whether the launcher is the site's.
func (t *Task) launcherFrom(site *Site) (string, bool) {
	l := t.MPI.Launcher
	if l != "" && l != LauncherAuto {
		return l, false
	}
	if site == nil {
		return "", false
	}
	if t.Resources.TotalTasks() > 1 || t.Resources.Nodes > 1 {
		return site.MPI.Launcher, true
	}
	return LauncherNone, false
}

// warnReaches says why a warning signal (a name without SIG) does not
// reach the ranks through a launcher, or "" when it does.
//
// srun (src/srun/signals.c) passes on SIGUSR1 and SIGUSR2; a first
// SIGINT only prints the step's status, SIGHUP and SIGQUIT (like SIGTERM)
// make it SIGKILL every rank, SIGCONT and SIGALRM it keeps, SIGURG it
// does not catch.
//
// OpenMPI's mpirun and mpiexec (mpirun(1) "Signal Propagation", the
// ess forward_signals default) pass on SIGUSR1, SIGUSR2, SIGALRM, SIGCONT,
// SIGTSTP and SIGABRT; SIGINT and SIGHUP (like SIGTERM) end the whole
// job; others stay with mpirun. tether holds Cray PALS's mpiexec to the
// same list.
func warnReaches(launcher, sig string) string {
	const use = "; use USR1 or USR2"
	switch launcher {
	case LauncherSrun:
		switch sig {
		case "USR1", "USR2":
			return ""
		case "INT":
			return "a single SIGINT only makes srun print the step's status" + use
		case "HUP", "QUIT":
			return fmt.Sprintf("srun answers SIG%s by killing every rank with SIGKILL%s", sig, use)
		case "CONT", "ALRM":
			return fmt.Sprintf("srun keeps SIG%s to itself%s", sig, use)
		default:
			return fmt.Sprintf("srun does not pass SIG%s on%s", sig, use)
		}
	case LauncherMpirun, LauncherMpiexec:
		switch sig {
		case "USR1", "USR2", "ALRM", "CONT":
			return ""
		case "INT", "HUP":
			return fmt.Sprintf("OpenMPI's %s ends the whole job on SIG%s%s", launcher, sig, use)
		default:
			return fmt.Sprintf("OpenMPI's %s passes only USR1, USR2, ALRM, CONT (and TSTP, ABRT) on to the ranks%s", launcher, use)
		}
	}
	return ""
}

// launcherFits says why a launcher cannot work on a site's backend, or "".
// srun needs a Slurm allocation; mpiexec, as tether runs it, takes the
// hosts from PBS (--hostfile $PBS_NODEFILE, or Cray PALS), so off PBS it
// would get --hostfile "" or no allocation; mpirun works anywhere.
func launcherFits(launcher string, site *Site) string {
	switch launcher {
	case LauncherSrun:
		if site.Backend != BackendSbatch && site.Backend != BackendSlurmREST {
			return fmt.Sprintf("srun needs a Slurm allocation: site %q uses backend %q (use mpirun, or mpiexec on PBS)", site.Name, site.Backend)
		}
	case LauncherMpiexec:
		if site.Backend != BackendPBS {
			there := `it would get --hostfile ""`
			if site.MPI.MpiexecStyle == "pals" {
				there = "PALS has no job to start ranks in"
			}
			return fmt.Sprintf("mpiexec as tether runs it reads the hosts from PBS (--hostfile $PBS_NODEFILE, or Cray PALS): site %q uses backend %q, where %s (use srun on Slurm, mpirun elsewhere)", site.Name, site.Backend, there)
		}
	}
	return ""
}
