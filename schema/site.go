package schema

import "time"

// Backend names accepted in a site's backend key.
const (
	BackendSlurmREST = "slurmrest"
	BackendSbatch    = "sbatch"
	BackendPBS       = "pbs"
	BackendLocal     = "local"
)

// SiteVersion is the site config format version this build reads.
const SiteVersion = 1

// Site describes one cluster: its backend, where run directories live and
// how to talk to the scheduler.
type Site struct {
	Version     int      `toml:"version" json:"version" doc:"site config format version (1)"`
	Name        string   `toml:"name" json:"name" doc:"site name" required:"true"`
	Backend     string   `toml:"backend" json:"backend" doc:"batch system adapter" required:"true" enum:"slurmrest,sbatch,pbs,local"`
	StateDir    string   `toml:"state_dir" json:"state_dir,omitempty" doc:"where run directories live; must be on a filesystem the compute nodes see; default $XDG_STATE_HOME/tether"`
	TetherPath  string   `toml:"tether_path" json:"tether_path,omitempty" doc:"path of the tether binary on compute nodes (for tether report); default the submitting binary"`
	MaxWalltime Duration `toml:"max_walltime" json:"max_walltime,omitempty" doc:"longest walltime a task may ask for (0: no limit)"`
	FileMode    string   `toml:"file_mode" json:"file_mode,omitempty" doc:"who may read run files: private (default: files 0600, directories 0700) or group (0640/0750, for a state dir shared with a group)" enum:"private,group"`
	Prologue    string   `toml:"prologue" json:"prologue,omitempty" doc:"shell lines the wrapper runs before the Task (e.g. module load); admin-controlled"`

	Defaults  SiteDefaults    `toml:"defaults" json:"defaults"`
	Env       EnvPolicy       `toml:"env" json:"env"`
	MPI       SiteMPI         `toml:"mpi" json:"mpi"`
	Poll      Poll            `toml:"poll" json:"poll"`
	Retry     SiteRetry       `toml:"retry" json:"retry"`
	Sbatch    SbatchConfig    `toml:"sbatch" json:"sbatch"`
	SlurmREST SlurmRESTConfig `toml:"slurmrest" json:"slurmrest"`
	PBS       PBSConfig       `toml:"pbs" json:"pbs"`
	Local     LocalConfig     `toml:"local" json:"local"`
	Limits    SiteLimits      `toml:"limits" json:"limits"`
	Pending   SitePending     `toml:"pending" json:"pending"`
	BadNodes  SiteBadNodes    `toml:"bad_nodes" json:"bad_nodes"`
	Submit    SiteSubmit      `toml:"submit" json:"submit"`

	// File is the path the site was loaded from ("" for the embedded default).
	File string `toml:"-" json:"file,omitempty"`
}

// SiteDefaults fill task fields the task file leaves empty.
type SiteDefaults struct {
	Walltime    Duration `toml:"walltime" json:"walltime,omitempty" doc:"walltime for tasks that set none"`
	Partition   string   `toml:"partition" json:"partition,omitempty"`
	Account     string   `toml:"account" json:"account,omitempty"`
	QoS         string   `toml:"qos" json:"qos,omitempty"`
	Reservation string   `toml:"reservation" json:"reservation,omitempty"`
	Constraint  string   `toml:"constraint" json:"constraint,omitempty"`
}

// Rank binding ([mpi] bind).
const (
	BindCores = "cores"
	BindNone  = "none"
)

// Environment propagation policies ([env] propagate).
const (
	PropagateNone = "none" // nothing of the submitter's environment
	PropagateSafe = "safe" // the submitter's environment minus the deny-list (default)
	PropagateAll  = "all"  // everything but tether's own and [env] deny
	PropagateList = "list" // only the names [env] allow matches
)

// EnvPolicy decides what of the submitter's environment reaches a job.
// The Task's env and the site's [mpi] env always go in.
type EnvPolicy struct {
	Propagate string   `toml:"propagate" json:"propagate,omitempty" doc:"what of the submitter's environment a job gets: none, safe (default: all but secrets and the submitter's own job variables), all, or list (only allow)" enum:"none,safe,all,list"`
	Allow     []string `toml:"allow" json:"allow,omitempty" doc:"names or globs (NAME, PREFIX_*) passed: with list the only ones, with safe also names the deny-list would withhold"`
	Deny      []string `toml:"deny" json:"deny,omitempty" doc:"names or globs never passed (besides the built-in deny-list of safe)"`
	TaskPass  bool     `toml:"task_pass" json:"task_pass,omitempty" doc:"let a Task's pass_env ask for more names from the submitter's environment"`
}

// SiteMPI is how MPI Tasks are launched at the site.
type SiteMPI struct {
	Launcher     string            `toml:"launcher" json:"launcher,omitempty" doc:"launcher for tasks with launcher=auto and ntasks > 1; default per backend (srun, mpiexec, mpirun)" enum:"srun,mpiexec,mpirun,none"`
	SrunMPI      string            `toml:"srun_mpi" json:"srun_mpi,omitempty" doc:"srun --mpi plugin (default pmix; Debian's OpenMPI needs pmix)"`
	MpiexecStyle string            `toml:"mpiexec_style" json:"mpiexec_style,omitempty" doc:"hostfile: mpiexec -n N --hostfile $PBS_NODEFILE; pals: mpiexec -n N --ppn P (Cray PALS)" enum:"hostfile,pals"`
	Bind         string            `toml:"bind" json:"bind,omitempty" doc:"how ranks are bound to CPUs: cores (srun --cpu-bind=cores, mpirun --bind-to core) or none (no binding; OMP_PLACES is then not set); default: the launcher's own (mpirun binds each rank to its cpus_per_task cores)" enum:"cores,none"`
	ExtraArgs    []string          `toml:"extra_args" json:"extra_args,omitempty" doc:"arguments for every launcher call"`
	Env          map[string]string `toml:"env" json:"env,omitempty" doc:"environment for the launcher"`
}

// Poll bounds the scheduler polling of all processes on this site.
type Poll struct {
	MinInterval         Duration `toml:"min_interval" json:"min_interval,omitempty" doc:"shortest interval between scheduler queries (after submits, near walltimes)"`
	MaxInterval         Duration `toml:"max_interval" json:"max_interval,omitempty" doc:"longest interval while nothing changes"`
	MaxQueriesPerMinute int      `toml:"max_queries_per_minute" json:"max_queries_per_minute,omitempty" doc:"hard cap on scheduler status queries per minute for the whole site, every tether process on it together (default 10 on Slurm, 6 on PBS, none on local)" min:"0"`
	VanishGrace         Duration `toml:"vanish_grace" json:"vanish_grace,omitempty" doc:"how long a job may be missing from the scheduler before the run is lost (when no exit file exists)"`
	EvidenceGrace       Duration `toml:"evidence_grace" json:"evidence_grace,omitempty" doc:"how long a job the scheduler reports ended waits for its exit file to become visible (shared filesystems cache attributes) before it is decided without it"`
	RecoverAfter        Duration `toml:"recover_after" json:"recover_after,omitempty" doc:"how long after a submit whose answer was lost tether waits for the job to show up (find by tag) before it sends the job again"`
	PendingAlertAfter   Duration `toml:"pending_alert_after" json:"pending_alert_after,omitempty" doc:"a job pending longer than this is reported as stuck"`
}

// SiteLimits is how requests are checked against the scheduler's
// partition (queue) limits before they are submitted.
type SiteLimits struct {
	Check      *bool    `toml:"check" json:"check,omitempty" doc:"refuse (exit 2) a request that no partition it may go to can ever run (walltime over MaxTime, more nodes or CPUs than the partition has, an unknown partition) before submitting it; default true on the batch backends"`
	CacheFor   Duration `toml:"cache_for" json:"cache_for,omitempty" doc:"how long the scheduler's partition list is reused by every tether process of the site (default 10m)"`
	Partitions []string `toml:"partitions" json:"partitions,omitempty" doc:"the candidates of partition = \"auto\", in order: the first whose limits fit is used (default: every partition, the scheduler's default first)"`
}

// SiteSubmit paces the site's submits.
type SiteSubmit struct {
	MaxPerSecond float64 `toml:"max_per_second" json:"max_per_second,omitempty" doc:"submits per second for the whole site, shared by every tether process of the state directory (0, the default: no pacing)"`
	MaxArraySize int     `toml:"max_array_size" json:"max_array_size,omitempty" doc:"most elements in one scheduler array: a larger array Task is submitted as several (default: Slurm's MaxArraySize default 1001, PBS's max_array_size default 10000, local 1001)" min:"0"`
}

// ArraySize is the most elements one scheduler array of the site holds.
func (s *Site) ArraySize() int {
	switch {
	case s.Submit.MaxArraySize > 0:
		return s.Submit.MaxArraySize
	case s.Backend == "pbs":
		return 10000
	}
	return 1001
}

// SitePending bounds how long a job may wait in the queue.
type SitePending struct {
	Timeout Duration `toml:"timeout" json:"timeout,omitempty" doc:"give up on a job still pending after this long: cancel it and end the run failed with cause pending_timeout (exit 1); 0 (default): wait as long as the scheduler keeps it"`
}

// CheckLimits reports whether requests are checked against the
// scheduler's partition limits before they are submitted.
func (s *Site) CheckLimits() bool {
	if s.Limits.Check != nil {
		return *s.Limits.Check
	}
	return s.Backend != BackendLocal
}

// SiteBadNodes is the site's shared bad-node list: a node that failed
// After attempts (of any runs of the site) within Within is excluded from
// every new submission of the site for ExcludeFor.
type SiteBadNodes struct {
	After      int      `toml:"after" json:"after,omitempty" doc:"node failures within 'within' that put a node on the site's bad-node list (0, the default: no list)" min:"0"`
	Within     Duration `toml:"within" json:"within,omitempty" doc:"the window the failures are counted in (default 1h)"`
	ExcludeFor Duration `toml:"exclude_for" json:"exclude_for,omitempty" doc:"how long a listed node is excluded from new submissions (default 6h)"`
}

// Enabled reports whether the site keeps a bad-node list.
func (b SiteBadNodes) Enabled() bool { return b.After > 0 }

// Window is Within, default 1h.
func (b SiteBadNodes) Window() time.Duration {
	if b.Within > 0 {
		return b.Within.D()
	}
	return time.Hour
}

// Exclusion is ExcludeFor, default 6h.
func (b SiteBadNodes) Exclusion() time.Duration {
	if b.ExcludeFor > 0 {
		return b.ExcludeFor.D()
	}
	return 6 * time.Hour
}

// SiteRetry holds the site's retry options.
type SiteRetry struct {
	Requeue            bool `toml:"requeue" json:"requeue,omitempty" doc:"let the scheduler requeue jobs itself (default off: tether retries)"`
	ExcludeFailedNodes bool `toml:"exclude_failed_nodes" json:"exclude_failed_nodes,omitempty" doc:"ask the scheduler to avoid nodes that failed an earlier attempt"`
}

// SbatchConfig configures the Slurm CLI backend.
type SbatchConfig struct {
	BinDir    string            `toml:"bin_dir" json:"bin_dir,omitempty" doc:"directory with sbatch, squeue, sacct, scontrol, scancel; default $PATH"`
	ExtraArgs []string          `toml:"extra_args" json:"extra_args,omitempty" doc:"extra sbatch arguments for every job"`
	Env       map[string]string `toml:"env" json:"env,omitempty" doc:"environment for the Slurm commands (e.g. SLURM_CONF)"`
	// Accounting is a pointer so that an absent key means "on".
	Accounting *bool `toml:"accounting" json:"accounting,omitempty" doc:"look up jobs that left the controller with sacct (needs slurmdbd; default true)"`
}

// UseAccounting reports whether sacct may be asked.
func (c SbatchConfig) UseAccounting() bool { return c.Accounting == nil || *c.Accounting }

// SlurmRESTConfig configures the slurmrestd backend.
type SlurmRESTConfig struct {
	URL          string   `toml:"url" json:"url,omitempty" doc:"http(s)://host:port or unix:///path/to/slurmrestd.sock"`
	APIVersion   string   `toml:"api_version" json:"api_version,omitempty" doc:"auto or a version such as v0.0.40"`
	User         string   `toml:"user" json:"user,omitempty" doc:"X-SLURM-USER-NAME"`
	TokenFile    string   `toml:"token_file" json:"token_file,omitempty" doc:"file holding the JWT (reread when it changes)"`
	TokenEnv     string   `toml:"token_env" json:"token_env,omitempty" doc:"environment variable holding the JWT"`
	TokenCommand []string `toml:"token_command" json:"token_command,omitempty" doc:"command printing a JWT, e.g. [\"scontrol\",\"token\",\"lifespan=3600\"]"`
	Timeout      Duration `toml:"timeout" json:"timeout,omitempty" doc:"deadline for one operation (a submit, a poll, a cancel) including its retries (default 30s)"`
	// AllowInsecureHTTP lets a JWT travel over plain http:// to a host
	// that is not the loopback.
	AllowInsecureHTTP bool `toml:"allow_insecure_http" json:"allow_insecure_http,omitempty" doc:"send the JWT over plain http:// to a host other than the loopback (anyone on the path can read it; prefer https:// or a unix:// socket)"`
	// LiveDetail: nil means true.
	LiveDetail *bool `toml:"live_detail" json:"live_detail,omitempty" doc:"on API v0.0.40+ read one pending job's full record per poll for its pending reason and expected start, which jobs/state lacks (default true; false: jobs/state only)"`
}

// PBSConfig configures the PBS backend.
type PBSConfig struct {
	BinDir    string            `toml:"bin_dir" json:"bin_dir,omitempty" doc:"directory with qsub, qstat, qdel; default $PATH"`
	Server    string            `toml:"server" json:"server,omitempty" doc:"PBS server name (default the client's default)"`
	ExtraArgs []string          `toml:"extra_args" json:"extra_args,omitempty" doc:"extra qsub arguments for every job"`
	Env       map[string]string `toml:"env" json:"env,omitempty" doc:"environment for the PBS commands"`
	Place     string            `toml:"place" json:"place,omitempty" doc:"-l place for jobs of more than one node: free, pack, scatter or vscatter, optionally :excl, :shared, :exclhost, :group=RES (default scatter; none leaves it to the server)"`
	Stageout  bool              `toml:"stageout" json:"stageout,omitempty" doc:"let the MoM copy stdout/stderr back at the job's end instead of writing them in the run directory as the job runs (qsub -k oed; for servers older than PBS Professional 19.2, which lack direct write); a job's outcome then waits for PBS to report it ended"`
}

// OutputAtEnd reports whether the job's stdout reaches the run directory
// only when the job has ended (PBS stage-out): an exit file alone then
// does not decide the run, since its logs may still be on their way.
func (s *Site) OutputAtEnd() bool { return s.Backend == BackendPBS && s.PBS.Stageout }

// LocalConfig configures the local process backend.
type LocalConfig struct {
	KillWait Duration `toml:"kill_wait" json:"kill_wait,omitempty" doc:"time between SIGTERM and SIGKILL at the walltime or on cancel"`
	// LimitMemory: nil means true.
	LimitMemory *bool `toml:"limit_memory" json:"limit_memory,omitempty" doc:"run a job that asks for memory in a memory cgroup of that size, as a cluster would (default true; where this process cannot make cgroups the limit is not enforced, and the job record says so)"`
}

// LimitsMemory reports whether local jobs run in a memory cgroup.
func (c LocalConfig) LimitsMemory() bool { return c.LimitMemory == nil || *c.LimitMemory }
