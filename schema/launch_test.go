package schema

import (
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
)

// siteFor parses a small site of a backend, with an optional [mpi] body.
func siteFor(t *testing.T, backend, mpi string) *Site {
	t.Helper()
	body := fmt.Sprintf("name = %q\nbackend = %q\n[defaults]\nwalltime = \"10m\"\n", backend, backend)
	if mpi != "" {
		body += "[mpi]\n" + mpi + "\n"
	}
	s, err := ParseSite(backend+".toml", []byte(body))
	if err != nil {
		t.Fatalf("site %s: %v", backend, err)
	}
	return s
}

// parseTask parses a task body as task.toml (the workdir is this
// directory), returning the error text or "".
func parseTask(t *testing.T, body string, site *Site) (*Task, string) {
	t.Helper()
	task, err := ParseTask("task.toml", []byte(body), nil, site)
	if err != nil {
		return nil, err.Error()
	}
	return task, ""
}

const minimalTask = "name = 'x'\ncommand = ['a']\n"

// example is a name a reserved glob matches.
func example(glob string) string {
	if p, ok := strings.CutSuffix(glob, "*"); ok {
		return p + "X"
	}
	return glob
}

// Every reserved name is refused in env, env_prepend and a site's [mpi]
// env, at its line, with the reason.
func TestReservedEnvRefused(t *testing.T) {
	site := testSite(t)
	for _, r := range ReservedEnvNames {
		name := example(r.Glob)
		if !validEnvKey(name) {
			t.Errorf("%s: example %q is no shell identifier", r.Glob, name)
			continue
		}
		if r.Why == "" || !strings.Contains(r.Why, strings.TrimSuffix(r.Glob, "*")) {
			t.Errorf("%s: reason %q does not name it", r.Glob, r.Why)
		}
		for _, table := range []string{"env", "env_prepend"} {
			body := minimalTask + "[" + table + "]\n" + name + " = '1'\n"
			want := fmt.Sprintf("task.toml:4: %s.%s: %s", table, name, r.Why)
			if _, msg := parseTask(t, body, site); !strings.Contains(msg, want) {
				t.Errorf("%s in [%s]: got %q, want %q", name, table, msg, want)
			}
		}
		body := "name = 's'\nbackend = 'local'\n[mpi]\nenv = { " + name + " = '1' }\n"
		want := fmt.Sprintf("site.toml:4: mpi.env.%s: %s", name, r.Why)
		if _, err := ParseSite("site.toml", []byte(body)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s in site [mpi] env: got %v, want %q", name, err, want)
		}
	}
}

// Names a careful user sets on purpose stay allowed; names that are no
// shell identifiers are refused.
func TestEnvNamesAllowedAndInvalid(t *testing.T) {
	site := testSite(t)
	for _, name := range []string{"PATH", "LD_LIBRARY_PATH", "OMP_NUM_THREADS", "SLURM_CPU_BIND", "SLURM_MPI_TYPE", "SRUN_CPUS_PER_TASK",
		"OMPI_MCA_btl", "PBS_CUSTOM", "SLURMX", "TETHER", "tether_x", "ENVIRONMENT", "seconds", "MY_SECONDS"} {
		if _, msg := parseTask(t, minimalTask+"[env]\n"+name+" = '1'\n[env_prepend]\n"+name+" = '/x'\n", site); msg != "" {
			t.Errorf("%s refused: %s", name, msg)
		}
	}
	for _, name := range []string{`"1X"`, `"A-B"`, `"A.B"`, `"A B"`, `""`} {
		msg := ""
		if _, msg = parseTask(t, minimalTask+"[env]\n"+name+" = '1'\n", site); !strings.Contains(msg, "is not a valid environment variable name") {
			t.Errorf("env %s: got %q", name, msg)
		}
	}
}

// pass_env may not pass a reserved name, or a glob all of whose names are
// reserved.
func TestPassEnvReserved(t *testing.T) {
	site := testSite(t)
	site.Env.TaskPass = true
	for _, c := range []struct{ glob, want string }{
		{"SLURM_RESTART_COUNT", `task.toml:3: pass_env: "SLURM_RESTART_COUNT": Slurm sets SLURM_RESTART_COUNT`},
		{"SLURM_JOB_*", `pass_env: "SLURM_JOB_*": Slurm sets the job's SLURM_JOB_* variables; the submitter's must not reach the job`},
		{"SLURM_JOB_ID*", `pass_env: "SLURM_JOB_ID*"`},
		{"SECONDS", `pass_env: "SECONDS": bash owns SECONDS`},
		{"TETHER_*", `pass_env: "TETHER_*"`},
	} {
		if _, msg := parseTask(t, minimalTask+"pass_env = ['"+c.glob+"']\n", site); !strings.Contains(msg, c.want) {
			t.Errorf("pass_env %s: got %q, want %q", c.glob, msg, c.want)
		}
	}
	for _, ok := range []string{"SLURM_*", "MY_*", "SECONDS*", "PBS_*", "PATH"} {
		if _, msg := parseTask(t, minimalTask+"pass_env = ['"+ok+"']\n", site); msg != "" {
			t.Errorf("pass_env %s refused: %s", ok, msg)
		}
	}
}

// The README's task reference names every reserved glob.
func TestReservedEnvInREADME(t *testing.T) {
	data, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(data)
	for _, r := range ReservedEnvNames {
		if !strings.Contains(readme, "`"+r.Glob+"`") {
			t.Errorf("README.md does not list `%s`", r.Glob)
		}
	}
}

// A TERM warning is refused, however it is spelled, on every site.
func TestWarnTERMRefused(t *testing.T) {
	for _, site := range []*Site{nil, testSite(t), siteFor(t, BackendSbatch, ""), siteFor(t, BackendPBS, "")} {
		for _, sig := range []string{"TERM", "SIGTERM", "term", "SigTerm"} {
			body := minimalTask + "[resources]\nwalltime = '5m'\n[signals]\nwarn_before = '1m'\nwarn_signal = '" + sig + "'\n"
			want := "task.toml:7: signals.warn_signal: TERM cannot be the warning: the wrapper takes the first SIGTERM as the start of a kill (walltime or cancel)"
			if _, msg := parseTask(t, body, site); !strings.Contains(msg, want) {
				t.Errorf("%s: got %q, want %q", sig, msg, want)
			}
		}
	}
}

// Which warning reaches the ranks through which launcher: srun passes
// on USR1 and USR2 only; OpenMPI's mpirun and mpiexec USR1, USR2, ALRM
// and CONT; without a launcher every signal but TERM works.
func TestWarnSignalPerLauncher(t *testing.T) {
	reach := map[string]string{
		LauncherSrun:    "USR1 USR2",
		LauncherMpirun:  "USR1 USR2 ALRM CONT",
		LauncherMpiexec: "USR1 USR2 ALRM CONT",
		LauncherNone:    "USR1 USR2 INT HUP QUIT ALRM URG CONT",
	}
	sites := map[string]*Site{
		LauncherSrun:    siteFor(t, BackendSbatch, ""),
		LauncherMpirun:  siteFor(t, BackendLocal, ""),
		LauncherMpiexec: siteFor(t, BackendPBS, ""),
		LauncherNone:    siteFor(t, BackendLocal, ""),
	}
	for launcher, ok := range reach {
		for _, sig := range []string{"USR1", "USR2", "INT", "HUP", "QUIT", "ALRM", "URG", "CONT"} {
			body := minimalTask + "[resources]\nwalltime = '5m'\nntasks = 4\n[mpi]\nlauncher = '" + launcher + "'\n[signals]\nwarn_before = '1m'\nwarn_signal = 'SIG" + sig + "'\n"
			_, msg := parseTask(t, body, sites[launcher])
			want := strings.Contains(" "+ok+" ", " "+sig+" ")
			if want && msg != "" {
				t.Errorf("%s through %s refused: %s", sig, launcher, msg)
			}
			if !want && !strings.Contains(msg, fmt.Sprintf("task.toml:10: signals.warn_signal: %s does not reach the ranks through %s: ", sig, launcher)) {
				t.Errorf("%s through %s: got %q", sig, launcher, msg)
			}
		}
	}
	// the reasons
	for _, c := range []struct{ launcher, sig, want string }{
		{LauncherSrun, "INT", "a single SIGINT only makes srun print the step's status; use USR1 or USR2"},
		{LauncherSrun, "HUP", "srun answers SIGHUP by killing every rank with SIGKILL"},
		{LauncherSrun, "QUIT", "srun answers SIGQUIT by killing every rank with SIGKILL"},
		{LauncherSrun, "CONT", "srun keeps SIGCONT to itself"},
		{LauncherSrun, "ALRM", "srun keeps SIGALRM to itself"},
		{LauncherSrun, "URG", "srun does not pass SIGURG on"},
		{LauncherMpirun, "INT", "OpenMPI's mpirun ends the whole job on SIGINT"},
		{LauncherMpiexec, "HUP", "OpenMPI's mpiexec ends the whole job on SIGHUP"},
		{LauncherMpirun, "QUIT", "OpenMPI's mpirun passes only USR1, USR2, ALRM, CONT (and TSTP, ABRT) on to the ranks"},
	} {
		if got := warnReaches(c.launcher, c.sig); !strings.Contains(got, c.want) {
			t.Errorf("%s through %s: %q, want %q", c.sig, c.launcher, got, c.want)
		}
	}
}

// The launcher "auto" resolves to is the one the warning is checked
// against, and the message says it is the site's.
func TestWarnSignalThroughSiteLauncher(t *testing.T) {
	slurm := siteFor(t, BackendSbatch, "")
	const warnINT = "[signals]\nwarn_before = '1m'\nwarn_signal = 'INT'\n"
	// one rank: no launcher, INT reaches the Task
	if _, msg := parseTask(t, minimalTask+"[resources]\nwalltime = '5m'\n"+warnINT, slurm); msg != "" {
		t.Errorf("INT without a launcher: %s", msg)
	}
	// four ranks: srun, the site's
	_, msg := parseTask(t, minimalTask+"[resources]\nwalltime = '5m'\nntasks = 4\n"+warnINT, slurm)
	want := `task.toml:8: signals.warn_signal: INT does not reach the ranks through srun (site "sbatch"'s [mpi] launcher, for 4 ranks): a single SIGINT`
	if !strings.Contains(msg, want) {
		t.Errorf("INT through the site's srun: got %q, want %q", msg, want)
	}
	// two nodes, the ranks derived: the site's mpirun
	local := siteFor(t, BackendLocal, "launcher = 'mpirun'")
	_, msg = parseTask(t, minimalTask+"[resources]\nwalltime = '5m'\nnodes = 2\n"+warnINT, local)
	if want := `INT does not reach the ranks through mpirun (site "local"'s [mpi] launcher, for 2 ranks): OpenMPI's mpirun ends the whole job on SIGINT`; !strings.Contains(msg, want) {
		t.Errorf("INT through the site's mpirun: got %q, want %q", msg, want)
	}
	// the Task's own launcher = "none" keeps any warning but TERM
	if _, msg := parseTask(t, minimalTask+"[resources]\nwalltime = '5m'\nntasks = 4\n[mpi]\nlauncher = 'none'\n"+warnINT, slurm); msg != "" {
		t.Errorf("INT with launcher none: %s", msg)
	}
}

// srun only on Slurm, mpiexec only on PBS, mpirun anywhere: for a Task's
// own launcher (at its [mpi] launcher line) and a site's (at the site's).
func TestLauncherFitsBackend(t *testing.T) {
	backends := []string{BackendSbatch, BackendSlurmREST, BackendPBS, BackendLocal}
	fits := map[string]string{
		LauncherSrun:    "sbatch slurmrest",
		LauncherMpiexec: "pbs",
		LauncherMpirun:  "sbatch slurmrest pbs local",
		LauncherNone:    "sbatch slurmrest pbs local",
		LauncherAuto:    "sbatch slurmrest pbs local",
	}
	for launcher, ok := range fits {
		for _, b := range backends {
			var site *Site
			if b == BackendSlurmREST {
				site = restSite(t, "")
			} else {
				site = siteFor(t, b, "")
			}
			body := minimalTask + "[resources]\nntasks = 2\n[mpi]\nlauncher = '" + launcher + "'\n"
			_, msg := parseTask(t, body, site)
			want := strings.Contains(" "+ok+" ", " "+b+" ")
			if want && msg != "" {
				t.Errorf("%s on %s refused: %s", launcher, b, msg)
			}
			if !want && !strings.HasPrefix(msg, "task.toml:6: mpi.launcher: "+launcher+" ") {
				t.Errorf("%s on %s: got %q", launcher, b, msg)
			}
			if launcher == LauncherAuto || launcher == LauncherNone {
				continue
			}
			// the same launcher as the site's own
			var err error
			if b == BackendSlurmREST {
				_, err = ParseSite("site.toml", []byte(restSiteBody("launcher = '"+launcher+"'")))
			} else {
				_, err = ParseSite("site.toml", []byte("name = 's'\nbackend = '"+b+"'\n[mpi]\nlauncher = '"+launcher+"'\n"))
			}
			if want && err != nil {
				t.Errorf("site %s with %s refused: %v", b, launcher, err)
			}
			if !want && (err == nil || !regexp.MustCompile(`^site\.toml:\d+: mpi\.launcher: `+launcher+` `).MatchString(err.Error())) {
				t.Errorf("site %s with %s: got %v", b, launcher, err)
			}
		}
	}
	// the messages
	for _, c := range []struct {
		launcher string
		site     *Site
		want     string
	}{
		{LauncherSrun, siteFor(t, BackendLocal, ""), `mpi.launcher: srun needs a Slurm allocation: site "local" uses backend "local" (use mpirun, or mpiexec on PBS)`},
		{LauncherMpiexec, siteFor(t, BackendSbatch, ""), `mpi.launcher: mpiexec as tether runs it reads the hosts from PBS (--hostfile $PBS_NODEFILE, or Cray PALS): site "sbatch" uses backend "sbatch", where it would get --hostfile "" (use srun on Slurm, mpirun elsewhere)`},
		{LauncherMpiexec, siteFor(t, BackendLocal, "mpiexec_style = 'pals'"), `site "local" uses backend "local", where PALS has no job to start ranks in`},
	} {
		if _, msg := parseTask(t, minimalTask+"[mpi]\nlauncher = '"+c.launcher+"'\n", c.site); !strings.Contains(msg, c.want) {
			t.Errorf("%s: got %q, want %q", c.launcher, msg, c.want)
		}
	}
}

func restSiteBody(mpi string) string {
	body := "name = 'slurmrest'\nbackend = 'slurmrest'\n[defaults]\nwalltime = '10m'\n[slurmrest]\nurl = 'unix:///run/slurmrestd.socket'\n"
	if mpi != "" {
		body += "[mpi]\n" + mpi + "\n"
	}
	return body
}

func restSite(t *testing.T, mpi string) *Site {
	t.Helper()
	s, err := ParseSite("slurmrest.toml", []byte(restSiteBody(mpi)))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// nodes follow from ntasks and ntasks_per_node; combinations given in
// full must agree.
func TestNodesFromTasksPerNode(t *testing.T) {
	site := testSite(t)
	for _, c := range []struct {
		res                  string
		nodes, ntasks, ranks int
	}{
		{"ntasks = 8\nntasks_per_node = 4", 2, 8, 8},
		{"ntasks = 9\nntasks_per_node = 4", 3, 9, 9},
		{"ntasks = 4\nntasks_per_node = 4", 1, 4, 4},
		{"ntasks = 3\nntasks_per_node = 4", 1, 3, 3},
		{"nodes = 2\nntasks = 8\nntasks_per_node = 4", 2, 8, 8},
		{"nodes = 3\nntasks = 9\nntasks_per_node = 4", 3, 9, 9},
		{"nodes = 2\nntasks_per_node = 4", 2, 0, 8},
		{"ntasks = 8", 0, 8, 8},
	} {
		task, msg := parseTask(t, minimalTask+"[resources]\n"+c.res+"\n", site)
		if msg != "" {
			t.Errorf("%q: %s", c.res, msg)
			continue
		}
		if r := task.Resources; r.Nodes != c.nodes || r.NTasks != c.ntasks || r.TotalTasks() != c.ranks {
			t.Errorf("%q: nodes %d, ntasks %d, %d ranks; want %d, %d, %d", c.res, r.Nodes, r.NTasks, r.TotalTasks(), c.nodes, c.ntasks, c.ranks)
		}
	}
	for _, c := range []struct{ res, want string }{
		{"nodes = 1\nntasks = 8\nntasks_per_node = 4", "task.toml:5: resources.ntasks: 8 tasks do not fit on 1 node(s) with ntasks_per_node = 4: that takes 2 nodes (set nodes = 2, or leave nodes out)"},
		{"nodes = 2\nntasks = 9\nntasks_per_node = 4", "resources.ntasks: 9 tasks do not fit on 2 node(s) with ntasks_per_node = 4: that takes 3 nodes"},
		{"nodes = 4\nntasks = 8\nntasks_per_node = 4", "task.toml:4: resources.nodes: 4 nodes with ntasks_per_node = 4 and ntasks = 8 leave 2 node(s) without tasks: 8 tasks fill 2 node(s) (leave nodes out, or lower ntasks_per_node)"},
		{"nodes = 4\nntasks = 2", "resources.ntasks: 2 tasks cannot fill 4 nodes"},
	} {
		if _, msg := parseTask(t, minimalTask+"[resources]\n"+c.res+"\n", site); !strings.Contains(msg, c.want) {
			t.Errorf("%q: got %q, want %q", c.res, msg, c.want)
		}
	}
	// derived from --set too
	task, err := ParseTask("task.toml", []byte(minimalTask), []string{"resources.ntasks=8", "resources.ntasks_per_node=4"}, site)
	if err != nil || task.Resources.Nodes != 2 {
		t.Errorf("--set ntasks=8 ntasks_per_node=4: %+v %v", task, err)
	}
}

// warn_target is main or group.
func TestWarnTarget(t *testing.T) {
	site := testSite(t)
	for _, ok := range []string{"main", "group"} {
		if _, msg := parseTask(t, minimalTask+"[signals]\nwarn_target = '"+ok+"'\n", site); msg != "" {
			t.Errorf("%s: %s", ok, msg)
		}
	}
	if _, msg := parseTask(t, minimalTask+"[signals]\nwarn_target = 'all'\n", site); !strings.Contains(msg, `task.toml:4: signals.warn_target: unknown target "all" (want main or group)`) {
		t.Errorf("all: %s", msg)
	}
}
