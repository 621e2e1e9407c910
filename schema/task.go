package schema

import "math"

// Launcher names accepted in [mpi] launcher.
const (
	LauncherAuto    = "auto"
	LauncherSrun    = "srun"
	LauncherMpiexec = "mpiexec"
	LauncherMpirun  = "mpirun"
	LauncherNone    = "none"
)

// Proceed policies for [proceed] on_timeout and on_failure.
const (
	PolicyNever      = "never"      // the run fails
	PolicyCheckpoint = "checkpoint" // partial if the checkpoint evidence suffices, else failed
	PolicyAlways     = "always"     // partial: downstream proceeds regardless
	PolicySkip       = "skip"       // partial if the evidence suffices, else skipped (exit 99)
)

// TaskVersion is the task spec format version this build reads.
const TaskVersion = 1

// Task is a task spec: what to run, with which resources, and how to
// decide the outcome.
type Task struct {
	Version          int               `toml:"version" json:"version" doc:"task spec format version (1)"`
	Name             string            `toml:"name" json:"name" doc:"short name: letters, digits, '.', '_' and '-'" required:"true"`
	Command          []string          `toml:"command" json:"command,omitempty" doc:"argv to run; exactly one of command or script"`
	Script           string            `toml:"script" json:"script,omitempty" doc:"shell script to run (a #! line picks the interpreter, default bash); exactly one of command or script"`
	Workdir          string            `toml:"workdir" json:"workdir,omitempty" doc:"working directory; relative paths are relative to the task file; default the task file's directory"`
	Env              map[string]string `toml:"env" json:"env,omitempty" doc:"environment variables for the Task"`
	EnvPrepend       map[string]string `toml:"env_prepend" json:"env_prepend,omitempty" doc:"values put in front of a variable of the job's environment, joined with ':' (e.g. PATH = \"/opt/x/bin\")"`
	PassEnv          []string          `toml:"pass_env" json:"pass_env,omitempty" doc:"names or globs of the submitter's environment to pass to the job as well (the site must allow it: [env] task_pass)"`
	Resources        Resources         `toml:"resources" json:"resources"`
	MPI              TaskMPI           `toml:"mpi" json:"mpi"`
	Proceed          Proceed           `toml:"proceed" json:"proceed"`
	Retry            Retry             `toml:"retry" json:"retry"`
	Signals          Signals           `toml:"signals" json:"signals"`
	HeartbeatTimeout Duration          `toml:"heartbeat_timeout" json:"heartbeat_timeout,omitempty" doc:"a running Task with no heartbeat or progress for this long is reported as hung (0: off)"`
	Scheduler        Scheduler         `toml:"scheduler" json:"scheduler"`
	Array            TaskArray         `toml:"array" json:"array,omitzero"`

	// File is the task file this spec was loaded from.
	File string  `toml:"-" json:"file,omitempty"`
	src  *source // positions of keys, for errors
}

// Resources is the Task's layout and limits.
type Resources struct {
	Nodes         int      `toml:"nodes" json:"nodes,omitempty" doc:"number of nodes (default 1; with ntasks and ntasks_per_node, enough for them: ntasks = 8, ntasks_per_node = 4 gives 2)" min:"0"`
	NTasks        int      `toml:"ntasks" json:"ntasks,omitempty" doc:"number of tasks (MPI ranks); default nodes*ntasks_per_node, else 1" min:"0"`
	NTasksPerNode int      `toml:"ntasks_per_node" json:"ntasks_per_node,omitempty" doc:"tasks per node" min:"0"`
	CPUsPerTask   int      `toml:"cpus_per_task" json:"cpus_per_task,omitempty" doc:"CPUs per task (default 1)" min:"0"`
	GPUsPerTask   int      `toml:"gpus_per_task" json:"gpus_per_task,omitempty" doc:"GPUs per task" min:"0"`
	Memory        Memory   `toml:"memory" json:"memory,omitempty" doc:"memory per node, e.g. \"4G\", \"512M\""`
	Walltime      Duration `toml:"walltime" json:"walltime,omitempty" doc:"time limit, e.g. \"30m\", \"02:00:00\"; default the site's [defaults] walltime"`
}

// TaskMPI selects the MPI launcher.
type TaskMPI struct {
	Launcher string   `toml:"launcher" json:"launcher,omitempty" doc:"auto picks the site's launcher when ntasks > 1" enum:"auto,srun,mpiexec,mpirun,none"`
	Args     []string `toml:"args" json:"args,omitempty" doc:"extra arguments for the launcher"`
}

// Proceed decides whether downstream steps may go on after a timeout or a failure.
type Proceed struct {
	OnTimeout      string   `toml:"on_timeout" json:"on_timeout" doc:"after a walltime timeout" enum:"never,checkpoint,always,skip"`
	OnFailure      string   `toml:"on_failure" json:"on_failure" doc:"after a non-zero exit or a node failure" enum:"never,checkpoint,always,skip"`
	MinFraction    float64  `toml:"min_fraction" json:"min_fraction" doc:"checkpoint fraction (0..1) that counts as enough work" min:"0" max:"1"`
	RequireOutputs []string `toml:"require_outputs" json:"require_outputs,omitempty" doc:"globs (relative to workdir) that must each match an existing file"`
	// MinSucceeded (arrays): nil is all of them.
	MinSucceeded *float64 `toml:"min_succeeded" json:"min_succeeded,omitempty" doc:"array Tasks: the fraction (0..1) of elements that must end succeeded or partial for the array to proceed (default 1: all)" min:"0" max:"1"`
}

// Retry is tether's own retry policy (scheduler requeue is off).
type Retry struct {
	MaxAttempts int  `toml:"max_attempts" json:"max_attempts" doc:"attempts per run, including the first" min:"1"`
	OnNodeFail  bool `toml:"on_node_fail" json:"on_node_fail" doc:"retry after NODE_FAIL or BOOT_FAIL"`
	OnPreempted bool `toml:"on_preempted" json:"on_preempted" doc:"retry after preemption"`
	OnTimeout   bool `toml:"on_timeout" json:"on_timeout" doc:"retry after a timeout when the Task left a resumable checkpoint"`
	OnExit      bool `toml:"on_exit" json:"on_exit,omitempty" doc:"retry after the Task exits non-zero (or is killed by a signal other than the scheduler's), from its last resumable checkpoint if any"`
	// OnOOM retries a job that ran out of memory with memory_factor
	// times the memory of the attempt that failed, up to max_memory.
	OnOOM        bool    `toml:"on_oom" json:"on_oom,omitempty" doc:"retry after an out-of-memory kill, asking memory_factor times the memory (needs resources.memory)"`
	MemoryFactor float64 `toml:"memory_factor" json:"memory_factor,omitempty" doc:"how much more memory each on_oom retry asks for (default 1.5)"`
	MaxMemory    Memory  `toml:"max_memory" json:"max_memory,omitempty" doc:"the most memory an on_oom retry asks for, e.g. \"512G\" (default: no limit)"`
}

// DefaultMemoryFactor is memory_factor when unset.
const DefaultMemoryFactor = 1.5

// NextMemory is the memory (MiB) the retry after an out-of-memory end of
// an attempt that had cur MiB asks for, or 0 when it cannot ask for more
// (no memory known, or already at max_memory).
func (r Retry) NextMemory(cur int64) int64 {
	if cur <= 0 {
		return 0
	}
	f := r.MemoryFactor
	if f <= 1 {
		f = DefaultMemoryFactor
	}
	next := int64(math.Ceil(float64(cur) * f))
	if r.MaxMemory > 0 && next > r.MaxMemory.MiB() {
		next = r.MaxMemory.MiB()
	}
	if next <= cur {
		return 0
	}
	return next
}

// Signals asks for a warning signal before the walltime.
type Signals struct {
	WarnBefore Duration `toml:"warn_before" json:"warn_before,omitempty" doc:"send warn_signal this long before the walltime (0: no warning)"`
	WarnSignal string   `toml:"warn_signal" json:"warn_signal,omitempty" doc:"signal name, default USR1; never TERM; through srun only USR1 and USR2 reach the ranks, through mpirun or mpiexec USR1, USR2, ALRM and CONT" enum:"USR1,USR2,INT,HUP,QUIT,ALRM,URG,CONT,SIGUSR1,SIGUSR2,SIGINT,SIGHUP,SIGQUIT,SIGALRM,SIGURG,SIGCONT"`
	WarnTarget string   `toml:"warn_target" json:"warn_target,omitempty" doc:"who gets the warning: main (default: the Task's main process, or its MPI launcher) or group (every process of the Task)" enum:"main,group"`
}

// Scheduler is passed through to the batch system.
type Scheduler struct {
	Partition   string   `toml:"partition" json:"partition,omitempty" doc:"Slurm partition (PBS: queue)"`
	Queue       string   `toml:"queue" json:"queue,omitempty" doc:"PBS queue (Slurm: partition); set partition or queue, not both"`
	Account     string   `toml:"account" json:"account,omitempty"`
	QoS         string   `toml:"qos" json:"qos,omitempty"`
	Reservation string   `toml:"reservation" json:"reservation,omitempty"`
	Constraint  string   `toml:"constraint" json:"constraint,omitempty"`
	ExtraArgs   []string `toml:"extra_args" json:"extra_args,omitempty" doc:"extra arguments for the submit command"`
}

// DefaultTask returns the defaults a task file is decoded over.
func DefaultTask() Task {
	return Task{
		Version: TaskVersion,
		MPI:     TaskMPI{Launcher: LauncherAuto},
		Proceed: Proceed{OnTimeout: PolicyCheckpoint, OnFailure: PolicyNever, MinFraction: 1},
		Retry:   Retry{MaxAttempts: 1, OnNodeFail: true, OnPreempted: true, OnTimeout: true},
	}
}

// deriveNodes sets nodes from ntasks and ntasks_per_node when the Task
// gives those two only (ntasks = 8, ntasks_per_node = 4: 2 nodes; 9 and
// 4: 3 nodes), so every backend and launcher gets the same node count.
func (r *Resources) deriveNodes() {
	if r.Nodes == 0 && r.NTasks > 0 && r.NTasksPerNode > 0 {
		r.Nodes = (r.NTasks + r.NTasksPerNode - 1) / r.NTasksPerNode
	}
}

// TotalTasks is the number of tasks (ranks) the Task runs: ntasks, else
// nodes × ntasks_per_node, else one per node (Slurm's default).
func (r Resources) TotalTasks() int {
	switch {
	case r.NTasks > 0:
		return r.NTasks
	case r.NTasksPerNode > 0:
		return max(r.Nodes, 1) * r.NTasksPerNode
	default:
		return max(r.Nodes, 1)
	}
}

// Partition returns the partition or queue, whichever is set.
func (s Scheduler) PartitionOrQueue() string {
	if s.Partition != "" {
		return s.Partition
	}
	return s.Queue
}
