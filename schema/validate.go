package schema

import (
	"fmt"
	"math"
	"net"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"

	"github.com/tether-hpc/tether/internal/units"
)

// ValidName reports whether s matches ^[A-Za-z0-9][A-Za-z0-9._-]{0,max-1}$:
// the form of task, site and run names (they become file names). A loop,
// not a regexp: compiling the bounded repetition cost every tether
// process ~0.3 ms at start-up.
func ValidName(s string, max int) bool {
	if len(s) == 0 || len(s) > max {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case i > 0 && (c == '.' || c == '_' || c == '-'):
		default:
			return false
		}
	}
	return true
}

// plainHTTPHost returns the host of an http:// URL.
func plainHTTPHost(raw string) (string, bool) {
	if !strings.HasPrefix(raw, "http://") {
		return "", false
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "", false
	}
	return u.Hostname(), true
}

// loopbackHost reports whether host is the loopback (localhost, 127/8, ::1).
func loopbackHost(host string) bool {
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// ValidEnvGlob reports whether g is a variable name or a name prefix
// followed by one trailing '*'.
func ValidEnvGlob(g string) bool {
	name := strings.TrimSuffix(g, "*")
	return name == "" && g == "*" || validEnvKey(name)
}

// validEnvKey reports whether s matches ^[A-Za-z_][A-Za-z0-9_]*$.
func validEnvKey(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z', c == '_':
		case i > 0 && c >= '0' && c <= '9':
		default:
			return false
		}
	}
	return true
}

// Signals maps the warn signal names tether accepts to their numbers.
var signalNumbers = map[string]syscall.Signal{
	"USR1": syscall.SIGUSR1, "USR2": syscall.SIGUSR2, "INT": syscall.SIGINT,
	"TERM": syscall.SIGTERM, "HUP": syscall.SIGHUP, "QUIT": syscall.SIGQUIT,
	"ALRM": syscall.SIGALRM, "URG": syscall.SIGURG, "CONT": syscall.SIGCONT,
}

// SignalNumber returns the number of a signal name such as "USR1" or "SIGUSR1".
func SignalNumber(name string) (syscall.Signal, bool) {
	s, ok := signalNumbers[strings.TrimPrefix(strings.ToUpper(name), "SIG")]
	return s, ok
}

// WarnSignalName is the normalized warn signal ("USR1"), or "" when no
// warning is asked for.
func (s Signals) WarnSignalName() string {
	if s.WarnBefore == 0 {
		return ""
	}
	if s.WarnSignal == "" {
		return "USR1"
	}
	return strings.TrimPrefix(strings.ToUpper(s.WarnSignal), "SIG")
}

func policyOK(p string) bool {
	switch p {
	case PolicyNever, PolicyCheckpoint, PolicyAlways, PolicySkip:
		return true
	}
	return false
}

// validate checks values that decode fine but cannot work.
func (t *Task) validate(site *Site) Errors {
	var errs Errors
	e := func(key, format string, args ...any) {
		errs = append(errs, t.src.errAt(key, format, args...))
	}
	if t.Version != TaskVersion {
		e("version", "unsupported task format version %d (this tether reads version %d)", t.Version, TaskVersion)
	}
	switch {
	case t.Name == "":
		e("name", "is required")
	case !ValidName(t.Name, 64):
		e("name", "%q: use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit", t.Name)
	}
	switch {
	case len(t.Command) == 0 && t.Script == "":
		e("command", "is required: set command (an argv array) or script")
	case len(t.Command) > 0 && t.Script != "":
		e("script", "set command or script, not both")
	case len(t.Command) > 0 && t.Command[0] == "":
		e("command", "the program (first element) is empty")
	}
	for i, a := range t.Command {
		if strings.ContainsRune(a, 0) {
			e("command", "element %d contains a NUL byte", i)
		}
	}
	if strings.ContainsRune(t.Script, 0) {
		e("script", "contains a NUL byte")
	}
	for _, m := range []struct {
		key string
		env map[string]string
	}{{"env", t.Env}, {"env_prepend", t.EnvPrepend}} {
		for k, v := range m.env {
			switch why := ReservedEnv(k); {
			case !validEnvKey(k):
				e(m.key+"."+k, "%q is not a valid environment variable name", k)
			case why != "":
				e(m.key+"."+k, "%s", why)
			case strings.ContainsRune(v, 0):
				e(m.key+"."+k, "value contains a NUL byte")
			}
		}
	}
	for _, g := range t.PassEnv {
		if !ValidEnvGlob(g) {
			e("pass_env", "%q: want a variable name, or a name prefix ending in * (PREFIX_*)", g)
		} else if why := reservedPassEnv(g); why != "" {
			e("pass_env", "%q: %s; the submitter's must not reach the job", g, why)
		}
	}
	if len(t.PassEnv) > 0 && site != nil && !site.Env.TaskPass {
		e("pass_env", "site %q does not let tasks pass variables of the submitter's environment (its admin can allow it with [env] task_pass = true)", site.Name)
	}
	r := t.Resources
	for _, f := range []struct {
		key string
		v   int
	}{{"resources.nodes", r.Nodes}, {"resources.ntasks", r.NTasks}, {"resources.ntasks_per_node", r.NTasksPerNode},
		{"resources.cpus_per_task", r.CPUsPerTask}, {"resources.gpus_per_task", r.GPUsPerTask}} {
		if f.v < 0 {
			e(f.key, "must not be negative (got %d)", f.v)
		}
	}
	// nodes left out with ntasks and ntasks_per_node was derived
	// (deriveNodes): these are the combinations given in full
	if r.NTasks > 0 && r.NTasksPerNode > 0 {
		need := (r.NTasks + r.NTasksPerNode - 1) / r.NTasksPerNode
		switch nodes := max(r.Nodes, 1); {
		case need > nodes:
			e("resources.ntasks", "%d tasks do not fit on %d node(s) with ntasks_per_node = %d: that takes %d nodes (set nodes = %d, or leave nodes out)", r.NTasks, nodes, r.NTasksPerNode, need, need)
		case need < nodes:
			e("resources.nodes", "%d nodes with ntasks_per_node = %d and ntasks = %d leave %d node(s) without tasks: %d tasks fill %d node(s) (leave nodes out, or lower ntasks_per_node)", nodes, r.NTasksPerNode, r.NTasks, nodes-need, r.NTasks, need)
		}
	} else if r.Nodes > 0 && r.NTasks > 0 && r.NTasks < r.Nodes {
		e("resources.ntasks", "%d tasks cannot fill %d nodes", r.NTasks, r.Nodes)
	}
	if r.Walltime < 0 {
		e("resources.walltime", "must not be negative")
	}
	if site != nil {
		if r.Walltime == 0 {
			e("resources.walltime", "is required (site %q sets no default walltime)", site.Name)
		} else if site.MaxWalltime > 0 && r.Walltime > site.MaxWalltime {
			e("resources.walltime", "%s is above the maximum %s of site %q", r.Walltime.D(), site.MaxWalltime.D(), site.Name)
		}
	}
	switch t.MPI.Launcher {
	case LauncherAuto, LauncherSrun, LauncherMpiexec, LauncherMpirun, LauncherNone:
	default:
		e("mpi.launcher", "unknown MPI launcher %q (want auto, srun, mpiexec, mpirun or none)", t.MPI.Launcher)
	}
	p := t.Proceed
	if !policyOK(p.OnTimeout) {
		e("proceed.on_timeout", "unknown policy %q (want never, checkpoint, always or skip)", p.OnTimeout)
	}
	if !policyOK(p.OnFailure) {
		e("proceed.on_failure", "unknown policy %q (want never, checkpoint, always or skip)", p.OnFailure)
	}
	if math.IsNaN(p.MinFraction) || p.MinFraction < 0 || p.MinFraction > 1 {
		e("proceed.min_fraction", "must be between 0 and 1 (got %v)", p.MinFraction)
	}
	for i, g := range p.RequireOutputs {
		if g == "" {
			e("proceed.require_outputs", "element %d is empty", i)
		} else if _, err := globCheck(g); err != nil {
			e("proceed.require_outputs", "bad glob %q: %v", g, err)
		}
	}
	if t.Retry.MaxAttempts < 1 || t.Retry.MaxAttempts > 100 {
		e("retry.max_attempts", "must be between 1 and 100 (got %d)", t.Retry.MaxAttempts)
	}
	if t.Retry.MemoryFactor != 0 && (t.Retry.MemoryFactor <= 1 || t.Retry.MemoryFactor > 16) {
		e("retry.memory_factor", "must be above 1 and at most 16 (got %g)", t.Retry.MemoryFactor)
	}
	if t.Retry.OnOOM && t.Resources.Memory == 0 {
		e("retry.on_oom", "needs resources.memory: a retry after an out-of-memory kill asks for memory_factor times the memory of the attempt that failed")
	}
	if t.Retry.MaxMemory != 0 && t.Resources.Memory != 0 && t.Retry.MaxMemory < t.Resources.Memory {
		e("retry.max_memory", "%s is below resources.memory %s", units.HumanMemory(t.Retry.MaxMemory.MiB()), units.HumanMemory(t.Resources.Memory.MiB()))
	}
	if t.Signals.WarnSignal != "" {
		sig := strings.TrimPrefix(strings.ToUpper(t.Signals.WarnSignal), "SIG")
		if _, ok := SignalNumber(sig); !ok {
			e("signals.warn_signal", "unknown signal %q (want USR1, USR2, INT, HUP, QUIT, ALRM, URG or CONT)", t.Signals.WarnSignal)
		} else if sig == "TERM" {
			e("signals.warn_signal", "TERM cannot be the warning: the wrapper takes the first SIGTERM as the start of a kill (walltime or cancel), so a TERM warning would be misread once the job has left the scheduler; use USR1 (the default) or USR2")
		} else if launcher, fromSite := t.launcherFrom(site); launcher != "" {
			if why := warnReaches(launcher, sig); why != "" {
				via := launcher
				if fromSite {
					via += fmt.Sprintf(" (site %q's [mpi] launcher, for %d ranks)", site.Name, r.TotalTasks())
				}
				e("signals.warn_signal", "%s does not reach the ranks through %s: %s", sig, via, why)
			}
		}
	}
	switch t.Signals.WarnTarget {
	case "", "main", "group":
	default:
		e("signals.warn_target", "unknown target %q (want main or group)", t.Signals.WarnTarget)
	}
	if site != nil && t.MPI.Launcher != "" && t.MPI.Launcher != LauncherAuto {
		if why := launcherFits(t.MPI.Launcher, site); why != "" {
			e("mpi.launcher", "%s", why)
		}
	}
	if t.Signals.WarnBefore < 0 {
		e("signals.warn_before", "must not be negative")
	} else if t.Signals.WarnBefore > 0 && r.Walltime > 0 && t.Signals.WarnBefore >= r.Walltime {
		e("signals.warn_before", "%s is not shorter than the walltime %s", t.Signals.WarnBefore.D(), r.Walltime.D())
	}
	if t.HeartbeatTimeout < 0 {
		e("heartbeat_timeout", "must not be negative")
	}
	if t.Scheduler.Partition != "" && t.Scheduler.Queue != "" && t.Scheduler.Partition != t.Scheduler.Queue {
		e("scheduler.queue", "set partition or queue, not both")
	}
	if err := t.checkWorkdir(); err != nil {
		errs = append(errs, err)
	}
	return errs
}

// globCheck validates a glob pattern without touching the filesystem.
func globCheck(g string) (bool, error) {
	_, err := filepath.Match(g, "")
	return err == nil, err
}

// validate checks a decoded site.
func (s *Site) validate(src *source) Errors {
	var errs Errors
	e := func(key, format string, args ...any) {
		errs = append(errs, src.errAt(key, format, args...))
	}
	if s.Version != SiteVersion {
		e("version", "unsupported site format version %d (this tether reads version %d)", s.Version, SiteVersion)
	}
	switch {
	case s.Name == "":
		e("name", "is required")
	case !ValidName(s.Name, 64):
		e("name", "%q: use 1-64 letters, digits, '.', '_' or '-'", s.Name)
	}
	sections := map[string]string{BackendSbatch: "sbatch", BackendSlurmREST: "slurmrest", BackendPBS: "pbs", BackendLocal: "local"}
	switch s.Backend {
	case "":
		e("backend", "is required (slurmrest, sbatch, pbs or local)")
	case BackendSbatch, BackendSlurmREST, BackendPBS, BackendLocal:
		for b, sec := range sections {
			if b != s.Backend && src.lines[sec] > 0 {
				e(sec, "section [%s] does not apply to backend %q", sec, s.Backend)
			}
		}
	default:
		e("backend", "unknown backend %q (want slurmrest, sbatch, pbs or local)", s.Backend)
	}
	if s.MPI.Launcher != "" {
		switch s.MPI.Launcher {
		case LauncherSrun, LauncherMpiexec, LauncherMpirun, LauncherNone:
		default:
			e("mpi.launcher", "unknown MPI launcher %q (want srun, mpiexec, mpirun or none)", s.MPI.Launcher)
		}
	}
	switch s.MPI.Bind {
	case "", BindCores, BindNone:
	default:
		e("mpi.bind", "unknown binding %q (want cores or none)", s.MPI.Bind)
	}
	switch s.MPI.MpiexecStyle {
	case "", "hostfile", "pals":
	default:
		e("mpi.mpiexec_style", "unknown style %q (want hostfile or pals)", s.MPI.MpiexecStyle)
	}
	for k := range s.MPI.Env {
		if !validEnvKey(k) {
			e("mpi.env."+k, "%q is not a valid environment variable name", k)
		} else if why := ReservedEnv(k); why != "" {
			e("mpi.env."+k, "%s", why)
		}
	}
	if s.MPI.Launcher != "" && s.MPI.Launcher != LauncherNone {
		if why := launcherFits(s.MPI.Launcher, s); why != "" {
			e("mpi.launcher", "%s", why)
		}
	}
	switch s.FileMode {
	case "", "private", "group":
	default:
		e("file_mode", "unknown mode %q (want private or group)", s.FileMode)
	}
	switch s.Env.Propagate {
	case "", PropagateNone, PropagateSafe, PropagateAll, PropagateList:
	default:
		e("env.propagate", "unknown policy %q (want none, safe, all or list)", s.Env.Propagate)
	}
	if s.Env.Propagate == PropagateList && len(s.Env.Allow) == 0 {
		e("env.allow", "is required with propagate = \"list\"")
	}
	for key, globs := range map[string][]string{"env.allow": s.Env.Allow, "env.deny": s.Env.Deny} {
		for _, g := range globs {
			if !ValidEnvGlob(g) {
				e(key, "%q: want a variable name, or a name prefix ending in * (PREFIX_*)", g)
			}
		}
	}
	if s.Poll.MinInterval > 0 && s.Poll.MaxInterval > 0 && s.Poll.MinInterval > s.Poll.MaxInterval {
		e("poll.min_interval", "%s is above poll.max_interval %s", s.Poll.MinInterval.D(), s.Poll.MaxInterval.D())
	}
	if s.Poll.MaxQueriesPerMinute < 0 {
		e("poll.max_queries_per_minute", "must not be negative")
	}
	if s.Backend == BackendPBS || s.Backend == BackendLocal {
		// they have no way to ask for "any node but these"
		why := map[string]string{BackendPBS: "OpenPBS's select has no host exclusion", BackendLocal: "it runs everything on this one host"}[s.Backend]
		if s.Retry.ExcludeFailedNodes {
			e("retry.exclude_failed_nodes", "the %s backend cannot ask the scheduler to avoid a node (%s)", s.Backend, why)
		}
		if s.BadNodes.Enabled() {
			e("bad_nodes.after", "the %s backend cannot keep jobs off a bad node (%s)", s.Backend, why)
		}
	}
	if s.Submit.MaxPerSecond < 0 {
		e("submit.max_per_second", "must not be negative")
	}
	if s.BadNodes.After < 0 {
		e("bad_nodes.after", "must not be negative")
	}
	if s.Backend == BackendSlurmREST {
		r := s.SlurmREST
		switch {
		case r.URL == "":
			e("slurmrest.url", "is required for backend slurmrest")
		case !strings.HasPrefix(r.URL, "http://") && !strings.HasPrefix(r.URL, "https://") && !strings.HasPrefix(r.URL, "unix://"):
			e("slurmrest.url", "%q: want http://, https:// or unix://", r.URL)
		}
		n := 0
		for _, set := range []bool{r.TokenFile != "", r.TokenEnv != "", len(r.TokenCommand) > 0} {
			if set {
				n++
			}
		}
		if n > 1 {
			e("slurmrest.token_file", "set only one of token_file, token_env and token_command")
		}
		if n == 0 && !strings.HasPrefix(r.URL, "unix://") {
			e("slurmrest.token_file", "a JWT is needed over TCP: set token_file, token_env or token_command")
		}
		if host, ok := plainHTTPHost(r.URL); ok && n > 0 && !loopbackHost(host) && !r.AllowInsecureHTTP {
			e("slurmrest.url", "%q sends the JWT in clear text to %s: use https:// (or a unix:// socket), or set slurmrest.allow_insecure_http = true if the network path is trusted", r.URL, host)
		}
		if r.APIVersion != "" && r.APIVersion != "auto" && !regexp.MustCompile(`^v0\.0\.\d+$`).MatchString(r.APIVersion) {
			e("slurmrest.api_version", "%q: want auto or a version such as v0.0.40", r.APIVersion)
		}
	}
	if p := s.PBS.Place; p != "" && p != "none" && !validPlace(p) {
		e("pbs.place", "%q: want free, pack, scatter or vscatter, optionally with :excl, :shared, :exclhost or :group=RESOURCE (or none)", p)
	}
	return errs
}

// validPlace checks a PBS place spec: an arrangement (free, pack, scatter,
// vscatter), a sharing (excl, shared, exclhost) and a grouping
// (group=RESOURCE), each at most once, joined by colons.
func validPlace(p string) bool {
	var arr, share, group bool
	for _, part := range strings.Split(p, ":") {
		switch {
		case part == "free" || part == "pack" || part == "scatter" || part == "vscatter":
			if arr {
				return false
			}
			arr = true
		case part == "excl" || part == "shared" || part == "exclhost":
			if share {
				return false
			}
			share = true
		case strings.HasPrefix(part, "group=") && len(part) > len("group="):
			if group {
				return false
			}
			group = true
		default:
			return false
		}
	}
	return true
}
