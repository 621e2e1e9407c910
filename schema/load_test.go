package schema

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const goodTask = `
name = "analysis"
command = ["python3", "analyze.py"]
[env]
MODE = "fast"
[resources]
nodes = 2
ntasks_per_node = 4
memory = "4G"
walltime = "30m"
[proceed]
on_timeout = "checkpoint"
min_fraction = 0.8
require_outputs = ["out/*.h5"]
[retry]
max_attempts = 3
[signals]
warn_before = "2m"
`

func testSite(t *testing.T) *Site {
	t.Helper()
	s, err := ParseSite("site.toml", []byte(`
name = "test"
backend = "local"
max_walltime = "1h"
[defaults]
walltime = "10m"
partition = "debug"
`))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func writeTask(t *testing.T, body string) string {
	t.Helper()
	dir := t.TempDir()
	p := filepath.Join(dir, "task.toml")
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadTaskGood(t *testing.T) {
	p := writeTask(t, goodTask)
	task, err := LoadTask(p, nil, testSite(t))
	if err != nil {
		t.Fatal(err)
	}
	if task.Resources.TotalTasks() != 8 || task.Resources.Memory.MiB() != 4096 || task.Resources.Walltime.D() != 30*time.Minute {
		t.Errorf("resources decoded wrong: %+v", task.Resources)
	}
	if task.Workdir != filepath.Dir(p) {
		t.Errorf("workdir = %q, want the task file's directory", task.Workdir)
	}
	if task.Scheduler.Partition != "debug" {
		t.Errorf("site default partition not applied: %q", task.Scheduler.Partition)
	}
	if task.Signals.WarnSignalName() != "USR1" || task.Retry.OnNodeFail != true {
		t.Errorf("defaults not applied: %+v %+v", task.Signals, task.Retry)
	}
}

func TestLoadTaskErrorsNameFileLineKey(t *testing.T) {
	cases := []struct {
		name string
		body string
		sets []string
		want []string // each a substring of one error
	}{
		{"unknown key", "name='x'\ncommand=['true']\n[resources]\nnodez = 2\n", nil,
			[]string{"task.toml:4: resources.nodez: unknown key (did you mean \"nodes\"?)"}},
		{"wrong type", "name='x'\ncommand=['true']\n[resources]\nntasks = 'four'\n", nil,
			[]string{"task.toml:4: resources.ntasks: wrong type"}},
		{"syntax", "name='x'\ncommand=['true'\n", nil, []string{"task.toml:"}},
		{"negative ntasks", "name='x'\ncommand=['true']\n[resources]\nntasks = -4\n", nil,
			[]string{"task.toml:4: resources.ntasks: must not be negative (got -4)"}},
		{"walltime above max", "name='x'\ncommand=['true']\n[resources]\nwalltime = '2h'\n", nil,
			[]string{"task.toml:4: resources.walltime: 2h0m0s is above the maximum 1h0m0s"}},
		{"unknown launcher", "name='x'\ncommand=['true']\n[mpi]\nlauncher = 'magic'\n", nil,
			[]string{"task.toml:4: mpi.launcher: unknown MPI launcher \"magic\""}},
		{"missing command", "name='x'\n", nil, []string{"command: is required"}},
		{"missing name", "command=['true']\n", nil, []string{"name: is required"}},
		{"both command and script", "name='x'\ncommand=['a']\nscript='b'\n", nil, []string{"task.toml:3: script: set command or script, not both"}},
		{"bad policy", "name='x'\ncommand=['a']\n[proceed]\non_timeout='maybe'\n", nil, []string{"task.toml:4: proceed.on_timeout: unknown policy"}},
		{"fraction range", "name='x'\ncommand=['a']\n[proceed]\nmin_fraction=1.5\n", nil, []string{"task.toml:4: proceed.min_fraction"}},
		{"workdir missing", "name='x'\ncommand=['a']\nworkdir='/no/such/dir'\n", nil, []string{"task.toml:3: workdir: directory /no/such/dir does not exist"}},
		{"reserved env", "name='x'\ncommand=['a']\n[env]\nTETHER_X='1'\n", nil, []string{"task.toml:4: env.TETHER_X: names starting with TETHER_ are reserved"}},
		{"bad env name", "name='x'\ncommand=['a']\nenv = { 'A-B' = '1' }\n", nil, []string{"task.toml:3: env.A-B: \"A-B\" is not a valid environment variable name"}},
		{"warn too long", "name='x'\ncommand=['a']\n[signals]\nwarn_before='20m'\n", nil, []string{"signals.warn_before: 20m0s is not shorter than the walltime 10m0s"}},
		{"bad signal", "name='x'\ncommand=['a']\n[signals]\nwarn_before='1m'\nwarn_signal='KILL'\n", nil, []string{"task.toml:5: signals.warn_signal: unknown signal"}},
		{"bad duration", "name='x'\ncommand=['a']\n[resources]\nwalltime='soon'\n", nil, []string{"task.toml:4: resources.walltime: invalid duration \"soon\""}},
		{"several errors at once", "name='x'\ncommand=['a']\n[resources]\nntasks=-1\nnodes=-2\n", nil,
			[]string{"task.toml:4: resources.ntasks", "task.toml:5: resources.nodes"}},
		{"set unknown key", "name='x'\ncommand=['a']\n", []string{"resources.gpus=2"}, []string{"--set: resources.gpus: unknown key"}},
		{"set bad value", "name='x'\ncommand=['a']\n", []string{"resources.ntasks=-2"}, []string{"--set: resources.ntasks: must not be negative"}},
		{"set not a value", "name='x'\ncommand=['a']\n", []string{"resources.ntasks=two"}, []string{"--set: resources.ntasks: \"two\" is not a valid TOML value"}},
		{"set no equals", "name='x'\ncommand=['a']\n", []string{"resources.ntasks"}, []string{"is not key=value"}},
		{"version", "version = 2\nname='x'\ncommand=['a']\n", nil, []string{"task.toml:1: version: unsupported task format version 2"}},
		// names the wrapper, bash or the scheduler own
		{"env SECONDS", "name='x'\ncommand=['a']\n[env]\nSECONDS='1'\n", nil, []string{"task.toml:4: env.SECONDS: bash owns SECONDS"}},
		{"env IFS", "name='x'\ncommand=['a']\n[env]\nIFS=':'\n", nil, []string{"task.toml:4: env.IFS: IFS would change"}},
		{"env BASH_ENV", "name='x'\ncommand=['a']\n[env]\nBASH_ENV='/x'\n", nil, []string{"task.toml:4: env.BASH_ENV"}},
		{"env __tether_", "name='x'\ncommand=['a']\n[env]\n__tether_rc='0'\n", nil, []string{"task.toml:4: env.__tether_rc: names starting with __tether_ belong to the wrapper"}},
		{"env SLURM_RESTART_COUNT", "name='x'\ncommand=['a']\n[env]\nSLURM_RESTART_COUNT='0'\n", nil, []string{"task.toml:4: env.SLURM_RESTART_COUNT: Slurm sets"}},
		{"env SLURM_JOB_ID", "name='x'\ncommand=['a']\n[env]\nSLURM_JOB_ID='7'\n", nil, []string{"task.toml:4: env.SLURM_JOB_ID: Slurm sets"}},
		{"env PBS_NODEFILE", "name='x'\ncommand=['a']\n[env]\nPBS_NODEFILE='/x'\n", nil, []string{"task.toml:4: env.PBS_NODEFILE: PBS sets"}},
		{"env_prepend reserved", "name='x'\ncommand=['a']\n[env_prepend]\nIFS='x'\n", nil, []string{"task.toml:4: env_prepend.IFS"}},
		// the warning signal
		{"warn TERM", "name='x'\ncommand=['a']\n[signals]\nwarn_before='1m'\nwarn_signal='TERM'\n", nil, []string{"task.toml:5: signals.warn_signal: TERM cannot be the warning"}},
		{"warn SIGTERM", "name='x'\ncommand=['a']\n[signals]\nwarn_before='1m'\nwarn_signal='SIGTERM'\n", nil, []string{"task.toml:5: signals.warn_signal: TERM cannot be the warning"}},
		{"warn HUP through mpirun", "name='x'\ncommand=['a']\n[resources]\nntasks=2\n[signals]\nwarn_before='1m'\nwarn_signal='HUP'\n", nil, []string{"task.toml:7: signals.warn_signal: HUP does not reach the ranks through mpirun"}},
		{"warn target", "name='x'\ncommand=['a']\n[signals]\nwarn_target='all'\n", nil, []string{"task.toml:4: signals.warn_target"}},
		// launchers that cannot work on the site's backend (local here)
		{"srun on local", "name='x'\ncommand=['a']\n[mpi]\nlauncher='srun'\n", nil, []string{"task.toml:4: mpi.launcher: srun needs a Slurm allocation: site \"test\" uses backend \"local\""}},
		{"mpiexec on local", "name='x'\ncommand=['a']\n[mpi]\nlauncher='mpiexec'\n", nil, []string{"task.toml:4: mpi.launcher: mpiexec as tether runs it reads the hosts from PBS"}},
		{"ntasks above nodes*per node", "name='x'\ncommand=['a']\n[resources]\nnodes=1\nntasks=8\nntasks_per_node=4\n", nil, []string{"resources.ntasks: 8 tasks do not fit on 1 node(s)"}},
	}
	site := testSite(t)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := writeTask(t, c.body)
			_, err := LoadTask(p, c.sets, site)
			var es Errors
			if !errors.As(err, &es) {
				t.Fatalf("want schema.Errors, got %v", err)
			}
			msg := strings.ReplaceAll(err.Error(), filepath.Dir(p)+"/", "")
			for _, w := range c.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error\n%s\ndoes not contain %q", msg, w)
				}
			}
		})
	}
}

func TestOverrides(t *testing.T) {
	p := writeTask(t, goodTask)
	task, err := LoadTask(p, []string{"resources.walltime=45m", "env.EXTRA=a b=c", "command=[\"echo\", \"hi\"]", "name=renamed", "proceed.min_fraction=0.5", "retry.on_timeout=false"}, testSite(t))
	if err != nil {
		t.Fatal(err)
	}
	if task.Resources.Walltime.D() != 45*time.Minute || task.Env["EXTRA"] != "a b=c" || task.Env["MODE"] != "fast" ||
		strings.Join(task.Command, " ") != "echo hi" || task.Name != "renamed" || task.Proceed.MinFraction != 0.5 || task.Retry.OnTimeout {
		t.Errorf("overrides not applied: %+v", task)
	}
}

func TestLoadSiteErrors(t *testing.T) {
	cases := map[string]struct{ body, want string }{
		"unknown backend":   {"name='s'\nbackend='lsf'\n", "site.toml:2: backend: unknown backend \"lsf\""},
		"missing backend":   {"name='s'\n", "backend: is required"},
		"wrong section":     {"name='s'\nbackend='local'\n[pbs]\nbin_dir='/x'\n", "site.toml:3: pbs: section [pbs] does not apply to backend \"local\""},
		"rest without url":  {"name='s'\nbackend='slurmrest'\n", "slurmrest.url: is required"},
		"rest without auth": {"name='s'\nbackend='slurmrest'\n[slurmrest]\nurl='http://x:6820'\n", "a JWT is needed"},
		"poll bounds":       {"name='s'\nbackend='local'\n[poll]\nmin_interval='10s'\nmax_interval='1s'\n", "site.toml:4: poll.min_interval"},
		"unknown key":       {"name='s'\nbackend='local'\nstate_directory='/x'\n", "site.toml:3: state_directory: unknown key (did you mean \"state_dir\"?)"},
		"bad launcher":      {"name='s'\nbackend='local'\n[mpi]\nlauncher='auto'\n", "site.toml:4: mpi.launcher"},
		"bad pbs place":     {"name='s'\nbackend='pbs'\n[pbs]\nplace='scatter:excl:pack'\n", "site.toml:4: pbs.place: \"scatter:excl:pack\""},
		"pbs place typo":    {"name='s'\nbackend='pbs'\n[pbs]\nplace='scater'\n", "site.toml:4: pbs.place"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := ParseSite("site.toml", []byte(c.body))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("got %v, want %q", err, c.want)
			}
		})
	}
}

func TestPBSPlaceAccepted(t *testing.T) {
	for _, p := range []string{"scatter", "scatter:excl", "pack:shared", "vscatter:exclhost", "free:group=switch", "excl", "none"} {
		if _, err := ParseSite("s.toml", []byte("name='s'\nbackend='pbs'\n[pbs]\nplace='"+p+"'\n")); err != nil {
			t.Errorf("place %q: %v", p, err)
		}
	}
}

func TestSiteDefaults(t *testing.T) {
	s, err := ParseSite("s.toml", []byte("name='s'\nbackend='sbatch'\n"))
	if err != nil {
		t.Fatal(err)
	}
	if s.MPI.Launcher != LauncherSrun || s.MPI.SrunMPI != "pmix" || s.Poll.MinInterval.D() != 2*time.Second {
		t.Errorf("defaults: %+v %+v", s.MPI, s.Poll)
	}
	p, _ := ParseSite("p.toml", []byte("name='p'\nbackend='pbs'\n"))
	if p.MPI.Launcher != LauncherMpiexec {
		t.Errorf("pbs launcher default = %q", p.MPI.Launcher)
	}
}

func TestFindSite(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "sub"), 0o755)
	os.WriteFile(filepath.Join(dir, "sub", "cluster.toml"), []byte("name='cluster'\nbackend='local'\n"), 0o644)
	got, err := FindSite("cluster", []string{"/nonexistent", dir})
	if err != nil || got != filepath.Join(dir, "sub", "cluster.toml") {
		t.Errorf("FindSite = %q, %v", got, err)
	}
	if _, err := FindSite("nope", []string{dir}); !errors.Is(err, ErrSiteNotFound) {
		t.Errorf("want ErrSiteNotFound, got %v", err)
	}
	if got, _ := FindSite("./x.toml", nil); got != "./x.toml" {
		t.Errorf("a path is taken as is, got %q", got)
	}
}

func TestLocateKeys(t *testing.T) {
	src := `# comment = 1
name = "x" # trailing = comment
script = """
not.a = key
"""
command = [
  "a",
  "b = c",
]
[resources]
ntasks = 4
"quoted.key" = 1
[env]
A = "1"
inline = { x = 1, y = "z" }
[[arr]]
k = 1
a.b.c = 2
`
	kl := locateKeys([]byte(src))
	want := map[string]int{"name": 2, "script": 3, "command": 6, "resources": 10, "resources.ntasks": 11,
		"resources.quoted.key": 12, "env.A": 14, "env.inline": 15, "env.inline.y": 15, "arr.k": 17, "arr.a.b.c": 18}
	for k, line := range want {
		if got := kl.line(k); got != line {
			t.Errorf("line(%q) = %d, want %d", k, got, line)
		}
	}
	if kl.line("not.a") != 0 {
		t.Errorf("a key inside a multi-line string was located")
	}
	if kl.line("resources.nothing") != 10 {
		t.Errorf("an unknown key falls back to its table's line")
	}
}

func TestJSONSchema(t *testing.T) {
	for _, kind := range []string{"task", "site"} {
		b, ok := JSONSchema(kind)
		if !ok || !strings.Contains(string(b), `"additionalProperties": false`) {
			t.Errorf("%s schema: %s", kind, b)
		}
	}
	b, _ := JSONSchema("task")
	for _, want := range []string{`"ntasks_per_node"`, `"on_timeout"`, `"enum"`, `"checkpoint"`, `"required"`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("task schema lacks %s", want)
		}
	}
	if _, ok := JSONSchema("nope"); ok {
		t.Error("unknown kind accepted")
	}
}

// A JWT never travels in clear text to another host unless the site says
// so: the site file is refused before any connection, naming the key.
func TestSiteRefusesJWTOverPlainHTTP(t *testing.T) {
	site := func(url, extra string) string {
		return "name='r'\nbackend='slurmrest'\n[slurmrest]\nurl='" + url + "'\ntoken_file='/etc/tether/jwt'\n" + extra
	}
	for _, c := range []struct {
		body string
		ok   bool
	}{
		{site("http://slurm.example.org:6820", ""), false},
		{site("http://10.1.2.3:6820", ""), false},
		{site("http://[fd00::1]:6820", ""), false},
		{site("http://slurm.example.org:6820", "allow_insecure_http = true\n"), true},
		{site("https://slurm.example.org:6820", ""), true},
		{site("http://127.0.0.1:6820", ""), true},
		{site("http://localhost:6820", ""), true},
		{site("http://[::1]:6820", ""), true},
	} {
		_, err := ParseSite("r.toml", []byte(c.body))
		if c.ok != (err == nil) {
			t.Errorf("%q: err = %v", c.body, err)
		}
		if err != nil && (!strings.Contains(err.Error(), "r.toml:4: slurmrest.url:") || !strings.Contains(err.Error(), "allow_insecure_http")) {
			t.Errorf("error does not name file, line and key: %v", err)
		}
	}
}

// ntasks and ntasks_per_node without nodes: the nodes follow.
func TestNodesDerived(t *testing.T) {
	p := writeTask(t, "name='x'\ncommand=['a']\n[resources]\nntasks=8\nntasks_per_node=4\n")
	task, err := LoadTask(p, nil, testSite(t))
	if err != nil {
		t.Fatal(err)
	}
	if r := task.Resources; r.Nodes != 2 || r.TotalTasks() != 8 {
		t.Errorf("resources %+v: want 2 nodes, 8 tasks", r)
	}
	p = writeTask(t, "name='x'\ncommand=['a']\n[resources]\nntasks=9\nntasks_per_node=4\n")
	if task, err = LoadTask(p, nil, testSite(t)); err != nil || task.Resources.Nodes != 3 {
		t.Errorf("9 tasks by 4: %+v %v", task, err)
	}
}

// A site's own launcher and [mpi] env must fit its backend and the wrapper.
func TestSiteLauncherAndEnv(t *testing.T) {
	for _, c := range []struct{ body, want string }{
		{"name='s'\nbackend='pbs'\n[mpi]\nlauncher='srun'\n", "site.toml:4: mpi.launcher: srun needs a Slurm allocation"},
		{"name='s'\nbackend='sbatch'\n[mpi]\nlauncher='mpiexec'\n", "site.toml:4: mpi.launcher: mpiexec as tether runs it"},
		{"name='s'\nbackend='local'\n[mpi]\nenv={SECONDS='1'}\n", "site.toml:4: mpi.env.SECONDS: bash owns SECONDS"},
	} {
		_, err := ParseSite("site.toml", []byte(c.body))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: got %v, want %q", c.body, err, c.want)
		}
	}
	for _, ok := range []string{"name='s'\nbackend='pbs'\n[mpi]\nlauncher='mpiexec'\n", "name='s'\nbackend='sbatch'\n[mpi]\nlauncher='mpirun'\n", "name='s'\nbackend='local'\n[mpi]\nenv={PATH='/x'}\n"} {
		if _, err := ParseSite("site.toml", []byte(ok)); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
}

// Node exclusion is refused, naming file, line and key, where the backend
// cannot express it (PBS, local), and accepted on Slurm.
func TestSiteRefusesNodeExclusionWhereUnsupported(t *testing.T) {
	for _, c := range []struct {
		backend, extra, key string
	}{
		{"pbs", "[retry]\nexclude_failed_nodes = true\n", "s.toml:4: retry.exclude_failed_nodes: the pbs backend cannot ask the scheduler to avoid a node (OpenPBS's select has no host exclusion)"},
		{"local", "[retry]\nexclude_failed_nodes = true\n", "s.toml:4: retry.exclude_failed_nodes: the local backend cannot"},
		{"pbs", "[bad_nodes]\nafter = 2\n", "s.toml:4: bad_nodes.after: the pbs backend cannot keep jobs off a bad node"},
		{"sbatch", "[retry]\nexclude_failed_nodes = true\n[bad_nodes]\nafter = 2\n", ""},
	} {
		_, err := ParseSite("s.toml", []byte("name = 's'\nbackend = '"+c.backend+"'\n"+c.extra))
		switch {
		case c.key == "" && err != nil:
			t.Errorf("%s: %v", c.backend, err)
		case c.key != "" && (err == nil || !strings.Contains(err.Error(), c.key)):
			t.Errorf("%s %q: %v, want %q", c.backend, c.extra, err, c.key)
		}
	}
}
