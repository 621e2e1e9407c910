package pbsemu

import (
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// EnvHome names the environment variable that points every emulator process
// (server, supervisors and the qsub/qstat/qdel clients) at one instance's
// state directory. Several instances run side by side with different values.
const EnvHome = "PBSEMU_HOME"

// EnvQsubFault, when set in qsub's environment, overrides the qsub_fault
// of config.json for that one command (tests that share an instance).
const EnvQsubFault = "PBSEMU_QSUB_FAULT"

// EnvQdelExitStatus, when set in qsub's environment, gives the job its own
// qdel_exit_status (tests that share an instance).
const EnvQdelExitStatus = "PBSEMU_QDEL_EXIT_STATUS"

// ConfigFile is the name of the configuration file inside the state directory.
const ConfigFile = "config.json"

// configVersion is the format version of config.json.
const configVersion = 1

// Duration is a time.Duration that reads and writes as a Go duration string
// ("1.5s", "10s") in JSON; a bare number is taken as seconds.
type Duration time.Duration

// MarshalJSON writes the duration as a string such as "10s".
func (d Duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(time.Duration(d).String())
}

// UnmarshalJSON reads "10s" style strings or numbers of seconds.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		v, err := time.ParseDuration(s)
		if err != nil {
			return fmt.Errorf("bad duration %q: %w", s, err)
		}
		*d = Duration(v)
		return nil
	}
	var f float64
	if err := json.Unmarshal(b, &f); err != nil {
		return fmt.Errorf("bad duration %s", b)
	}
	*d = Duration(f * float64(time.Second))
	return nil
}

// D returns the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// QueueConfig describes one execution queue.
type QueueConfig struct {
	Name string `json:"name"`
	// ResourcesMax limits what a job in this queue may request, for example
	// {"walltime": "01:00:00", "ncpus": "4"}. A job over a limit is rejected
	// at qsub with "Job violates queue and/or server resource limits" (188).
	ResourcesMax map[string]string `json:"resources_max,omitempty"`
	// ResourcesDefault is applied to jobs that do not ask for the resource,
	// for example {"walltime": "00:30:00"}.
	ResourcesDefault map[string]string `json:"resources_default,omitempty"`
}

// Config is the content of $PBSEMU_HOME/config.json. Zero values are replaced
// by the defaults of DefaultConfig when the file is loaded.
type Config struct {
	Version int `json:"version"`
	// ServerName is the PBS server name: the suffix of job ids (N.server).
	ServerName string `json:"server_name"`
	// NodeName is the single execution host: exec_host, exec_vnode and the
	// lines of PBS_NODEFILE. Set it to a resolvable name (e.g. the machine's
	// hostname or "localhost") when jobs run mpiexec --hostfile $PBS_NODEFILE.
	NodeName string `json:"node_name"`
	// SubmitHost is the host part of Job_Owner, Submit_Host and PBS_O_HOST.
	SubmitHost string `json:"submit_host"`
	PBSVersion string `json:"pbs_version"`
	// NCPUs, Mem and NGPUs are the consumable resources of the node.
	NCPUs int    `json:"ncpus"`
	Mem   string `json:"mem"`
	NGPUs int    `json:"ngpus"`

	Queues       []QueueConfig `json:"queues"`
	DefaultQueue string        `json:"default_queue"`

	// JobHistoryEnable is the server attribute job_history_enable: with it
	// off, finished jobs vanish from qstat at once (even with -x).
	JobHistoryEnable *bool `json:"job_history_enable"`
	// JobHistoryDuration is how long finished jobs stay visible (default 2 weeks).
	JobHistoryDuration Duration `json:"job_history_duration"`
	// Scheduling is the server attribute "scheduling"; false keeps jobs queued.
	Scheduling *bool `json:"scheduling"`

	// WalltimeCheckInterval is how often the supervisor (MoM) compares the
	// walltime used with the limit. OpenPBS polls about every 10 s.
	WalltimeCheckInterval Duration `json:"walltime_check_interval"`
	// KillDelay is the time between SIGTERM and SIGKILL when a running job
	// is deleted or exceeds its walltime (OpenPBS kill_delay, default 10 s).
	KillDelay Duration `json:"kill_delay"`
	// PollInterval is how often the server looks at its supervisors and
	// runs a scheduling cycle.
	PollInterval Duration `json:"poll_interval"`
	// ExitingDelay is the minimum time a job stays in state E before F.
	ExitingDelay Duration `json:"exiting_delay"`

	// ACLRoots lists the users allowed to run jobs as root; by default root
	// is refused with "Bad UID for job execution" (175) like OpenPBS.
	ACLRoots []string `json:"acl_roots"`

	// HomeDir overrides the job user's home directory (default: passwd).
	HomeDir string `json:"home_dir,omitempty"`
	// JobEnvironment is the base environment of every job, like the MoM's
	// $PBS_HOME/pbs_environment file (default PATH=/bin:/usr/bin).
	JobEnvironment map[string]string `json:"job_environment"`
	// LoginShell runs the job shell as a login shell ("-bash"), which reads
	// /etc/profile and ~/.profile, like the OpenPBS MoM.
	LoginShell *bool `json:"login_shell"`

	// OwnerPID, when set, makes the server shut down (killing its jobs)
	// once that process is gone: test instances clean up after a crash.
	OwnerPID int `json:"owner_pid,omitempty"`

	// EnforceMem is the MoM's "$enforce mem": kill a job whose resident
	// memory exceeds its mem request (Exit_status -27, JOB_EXEC_KILL_MEM).
	// Off by default, as in OpenPBS. cput requests are always enforced
	// (-28, JOB_EXEC_KILL_CPUT).
	EnforceMem bool `json:"enforce_mem,omitempty"`

	// QdelExitStatus is what a job deleted while running records as
	// Exit_status; its substate is 91 (terminated) in every case.
	// "signal" (the default): the MoM's SIGTERM kills the job's top shell,
	// 256+15 = 271 (capture 06). "zero": 0, as a second OpenPBS 23.06.06
	// server reported (capture 16). "job": SIGTERM reaches the job's
	// processes but not its top shell, which exits with the script's own
	// status: 143 for a wrapper that traps TERM and exits 128+15.
	QdelExitStatus string `json:"qdel_exit_status,omitempty"`

	// QsubFault is a fault for tests of lost submit answers: the server
	// queues the job, then the qsub client loses the answer. "hang": qsub
	// never returns (a client stuck on a dead connection). "fail": qsub
	// prints "qsub: Batch protocol error" (PBSE_PROTOCOL) and exits 183.
	// "silent": qsub exits 0 without printing the job id.
	QsubFault string `json:"qsub_fault,omitempty"`
}

// Values of Config.QdelExitStatus and Config.QsubFault.
const (
	QdelExitSignal = "signal"
	QdelExitZero   = "zero"
	QdelExitJob    = "job"

	QsubFaultHang   = "hang"
	QsubFaultFail   = "fail"
	QsubFaultSilent = "silent"
)

// check rejects values the emulator does not know.
func (c *Config) check() error {
	switch c.QdelExitStatus {
	case "", QdelExitSignal, QdelExitZero, QdelExitJob:
	default:
		return fmt.Errorf("qdel_exit_status %q: want %q, %q or %q", c.QdelExitStatus, QdelExitSignal, QdelExitZero, QdelExitJob)
	}
	switch c.QsubFault {
	case "", QsubFaultHang, QsubFaultFail, QsubFaultSilent:
	default:
		return fmt.Errorf("qsub_fault %q: want %q, %q or %q", c.QsubFault, QsubFaultHang, QsubFaultFail, QsubFaultSilent)
	}
	return nil
}

func boolp(b bool) *bool { return &b }

// DefaultConfig returns the configuration of a fresh instance, modelled on
// the captured OpenPBS 23.06 single-host server "pbshost".
func DefaultConfig() Config {
	return Config{
		Version:               configVersion,
		ServerName:            "pbshost",
		PBSVersion:            "23.06.06",
		NCPUs:                 2,
		Mem:                   "24684100kb",
		Queues:                []QueueConfig{{Name: "workq"}},
		DefaultQueue:          "workq",
		JobHistoryEnable:      boolp(true),
		JobHistoryDuration:    Duration(14 * 24 * time.Hour),
		Scheduling:            boolp(true),
		WalltimeCheckInterval: Duration(10 * time.Second),
		KillDelay:             Duration(10 * time.Second),
		PollInterval:          Duration(100 * time.Millisecond),
		ExitingDelay:          Duration(500 * time.Millisecond),
		JobEnvironment:        map[string]string{"PATH": "/bin:/usr/bin"},
		LoginShell:            boolp(true),
	}
}

// fill replaces zero values with defaults.
func (c *Config) fill() {
	d := DefaultConfig()
	if c.Version == 0 {
		c.Version = d.Version
	}
	if c.ServerName == "" {
		c.ServerName = d.ServerName
	}
	if c.NodeName == "" {
		c.NodeName = c.ServerName
	}
	if c.SubmitHost == "" {
		c.SubmitHost = c.ServerName
	}
	if c.PBSVersion == "" {
		c.PBSVersion = d.PBSVersion
	}
	if c.NCPUs == 0 {
		c.NCPUs = d.NCPUs
	}
	if c.Mem == "" {
		c.Mem = d.Mem
	}
	if len(c.Queues) == 0 {
		c.Queues = d.Queues
	}
	if c.DefaultQueue == "" {
		c.DefaultQueue = c.Queues[0].Name
	}
	if c.JobHistoryEnable == nil {
		c.JobHistoryEnable = d.JobHistoryEnable
	}
	if c.JobHistoryDuration == 0 {
		c.JobHistoryDuration = d.JobHistoryDuration
	}
	if c.Scheduling == nil {
		c.Scheduling = d.Scheduling
	}
	if c.WalltimeCheckInterval == 0 {
		c.WalltimeCheckInterval = d.WalltimeCheckInterval
	}
	if c.KillDelay == 0 {
		c.KillDelay = d.KillDelay
	}
	if c.PollInterval == 0 {
		c.PollInterval = d.PollInterval
	}
	if c.ExitingDelay == 0 {
		c.ExitingDelay = d.ExitingDelay
	}
	if c.JobEnvironment == nil {
		c.JobEnvironment = d.JobEnvironment
	}
	if c.LoginShell == nil {
		c.LoginShell = d.LoginShell
	}
}

func (c *Config) historyEnabled() bool { return c.JobHistoryEnable != nil && *c.JobHistoryEnable }
func (c *Config) scheduling() bool     { return c.Scheduling == nil || *c.Scheduling }

func (c *Config) queue(name string) *QueueConfig {
	for i := range c.Queues {
		if c.Queues[i].Name == name {
			return &c.Queues[i]
		}
	}
	return nil
}

// Instance is one emulator state directory.
type Instance struct {
	Home string
}

// InstanceFromEnv returns the instance named by $PBSEMU_HOME, or
// ~/.pbsemu when it is unset.
func InstanceFromEnv() Instance {
	if h := os.Getenv(EnvHome); h != "" {
		return Instance{Home: h}
	}
	home, _ := os.UserHomeDir()
	return Instance{Home: filepath.Join(home, ".pbsemu")}
}

func (in Instance) path(elem ...string) string {
	return filepath.Join(append([]string{in.Home}, elem...)...)
}

// SocketPath is the unix socket of the server. Long state paths are mapped
// to a short path under /tmp because of the 108-byte sun_path limit.
func (in Instance) SocketPath() string {
	p := in.path("server.sock")
	if len(p) < 100 {
		return p
	}
	abs, _ := filepath.Abs(in.Home)
	sum := sha1.Sum([]byte(abs))
	return filepath.Join(os.TempDir(), "pbsemu-"+hex.EncodeToString(sum[:8])+".sock")
}

// LoadConfig reads the instance's config.json, filling defaults. A missing
// file gives the default configuration.
func (in Instance) LoadConfig() (Config, error) {
	var c Config
	b, err := os.ReadFile(in.path(ConfigFile))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return c, fmt.Errorf("read pbsemu config: %w", err)
	}
	if err == nil {
		if err := json.Unmarshal(b, &c); err != nil {
			return c, fmt.Errorf("parse %s: %w", in.path(ConfigFile), err)
		}
	}
	c.fill()
	if err := c.check(); err != nil {
		return c, fmt.Errorf("%s: %w", in.path(ConfigFile), err)
	}
	return c, nil
}

// WriteConfig writes config.json atomically.
func (in Instance) WriteConfig(c Config) error {
	if c.Version == 0 {
		c.Version = configVersion
	}
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(in.Home, 0o755); err != nil {
		return err
	}
	return writeFileAtomic(in.path(ConfigFile), append(b, '\n'), 0o644)
}

func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-"+filepath.Base(path)+"-*")
	if err != nil {
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return err
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return err
	}
	if err := tmp.Close(); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	return os.Rename(tmp.Name(), path)
}
