package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// siteExamples: what each example site file promises, checked in what
// `tether submit --dry-run` would submit for a small MPI Task (2 nodes, 4
// ranks per node, 8 CPUs and 1 GPU per rank). A new example without an
// entry here fails the test.
var siteExamples = map[string][]string{
	"slurm-gpu-sbatch.toml": {
		"# launch: srun --mpi=pmix --export=ALL --ntasks=8 --nodes=2 --ntasks-per-node=4 --cpus-per-task=8 --gpus-per-task=1 --cpu-bind=cores ./app",
		"--gpus-per-task=1", "--account=mXXXX_g", "--qos=regular", "--constraint=gpu",
	},
	"slurmrest-jwt-socket.toml": {
		"# launch: srun --mpi=pmix --export=ALL --ntasks=8 --nodes=2 --ntasks-per-node=4 --cpus-per-task=8 --gpus-per-task=1 --cpu-bind=cores ./app",
		"POST unix:///run/slurmrestd/slurmrestd.socket/slurm/<api_version>/job/submit",
		`"Partition":"batch","Account":"myproject"`,
	},
	"slurmrest-jwt-https.toml": {
		"POST https://slurmrest.cluster.example.org/slurm/<api_version>/job/submit",
		"# launch: srun --mpi=pmix --export=ALL --ntasks=8",
	},
	"pbs-cray-pals.toml": {
		"# launch: mpiexec -n 8 --ppn 4 --depth 8 --cpu-bind depth ./app",
		"-l select=2:ncpus=32:mpiprocs=4:ompthreads=8:ngpus=4:system=polaris", "-l place=scatter",
		"-q debug", "-A MyProject", "-l filesystems=home:eagle",
	},
	"local.toml": {
		"# launch: mpirun -np 8 --map-by ppr:4:node:PE=8 --bind-to core ",
		"--oversubscribe ./app",
	},
}

// Every file in site-configs/examples is a valid site (tether validate,
// strict about unknown keys) and renders what its comments say; no token
// appears in what would be sent.
func TestSiteExamples(t *testing.T) {
	t.Parallel()
	files, _ := filepath.Glob("../../site-configs/examples/*.toml")
	if len(files) == 0 {
		t.Fatal("no example site files")
	}
	var names []string
	for _, f := range files {
		names = append(names, filepath.Base(f))
	}
	sort.Strings(names)
	for name := range siteExamples {
		if _, err := os.Stat(filepath.Join("../../site-configs/examples", name)); err != nil {
			t.Errorf("siteExamples lists %s, which is not in site-configs/examples", name)
		}
	}
	dir := t.TempDir()
	task := filepath.Join(dir, "mpi.toml")
	os.WriteFile(task, []byte(`name = "mpi"
command = ["./app"]
[resources]
nodes = 2
ntasks_per_node = 4
cpus_per_task = 8
gpus_per_task = 1
walltime = "30m"
`), 0o644)
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			want, ok := siteExamples[name]
			if !ok {
				t.Fatalf("site-configs/examples/%s has no checks in siteExamples", name)
			}
			abs, _ := filepath.Abs(filepath.Join("../../site-configs/examples", name))
			run := func(args ...string) (string, error) {
				cmd := exec.Command(tetherBin, args...)
				// no scheduler commands on PATH: the limits check finds no
				// scheduler and the dry run goes on without one
				cmd.Env = tetherEnv("PATH=/nonexistent", "HOME="+dir, "XDG_STATE_HOME="+filepath.Join(dir, "xdg"))
				cmd.Dir = dir
				out, err := cmd.CombinedOutput()
				return string(out), err
			}
			if out, err := run("validate", abs); err != nil {
				t.Fatalf("tether validate %s: %v\n%s", name, err, out)
			}
			out, err := run("submit", "--dry-run", "--site", abs, "--state-dir", filepath.Join(dir, "state-"+name), task)
			if err != nil {
				t.Fatalf("tether submit --dry-run: %v\n%s", err, tail(out, 2000))
			}
			for _, w := range want {
				if !strings.Contains(out, w) {
					t.Errorf("%s: the dry run lacks %q", name, w)
				}
			}
			body, _ := os.ReadFile(abs)
			if !strings.Contains(string(body), "CHANGE:") {
				t.Errorf("%s does not say what the admin must change (a CHANGE: comment)", name)
			}
			if strings.Contains(string(body), "eyJ") {
				t.Errorf("%s holds what looks like a JWT", name)
			}
		})
	}
}
