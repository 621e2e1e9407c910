package launcher

import (
	"errors"
	"strings"
	"testing"

	"github.com/tether-hpc/tether/schema"
)

func errorsAs(err error, target any) bool { return errors.As(err, target) }

func TestLaunchWords(t *testing.T) {
	site := func(backend, style, bind string) *schema.Site {
		body := "name='s'\nbackend='" + backend + "'\n[mpi]\n"
		if style != "" {
			body += "mpiexec_style='" + style + "'\n"
		}
		if bind != "" {
			body += "bind='" + bind + "'\n"
		}
		body += "env={SITE_X='1'}\n"
		s, err := schema.ParseSite("s.toml", []byte(body))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	task := func(launcher string, nodes, ntasks, ppn, cpt int) *schema.Task {
		tk := schema.DefaultTask()
		tk.MPI.Launcher = launcher
		tk.Resources = schema.Resources{Nodes: nodes, NTasks: ntasks, NTasksPerNode: ppn, CPUsPerTask: cpt}
		tk.Env = map[string]string{"B": "1", "A": "2"}
		tk.EnvPrepend = map[string]string{"LD_LIBRARY_PATH": "/opt/x/lib"}
		return &tk
	}
	const tether = "-x TETHER_RUN_ID -x TETHER_RUN_DIR -x TETHER_STATUS_FILE -x TETHER_ATTEMPT -x TETHER_ATTEMPT_DIR"
	const rest = "-x A -x B -x LD_LIBRARY_PATH -x SITE_X"
	const omp = "-x A -x B -x LD_LIBRARY_PATH -x OMP_NUM_THREADS -x OMP_PLACES -x OMP_PROC_BIND -x SITE_X"
	cases := []struct {
		name    string
		task    *schema.Task
		site    *schema.Site
		resumed bool
		want    string
	}{
		{"auto single task runs plainly", task("auto", 0, 1, 0, 0), site("sbatch", "", ""), false, "prog arg"},
		{"auto srun on slurm", task("auto", 2, 4, 2, 3), site("sbatch", "", ""), false, "srun --mpi=pmix --export=ALL --ntasks=4 --nodes=2 --ntasks-per-node=2 --cpus-per-task=3 prog arg"},
		{"srun, cores", task("auto", 2, 4, 2, 2), site("sbatch", "", "cores"), false, "srun --mpi=pmix --export=ALL --ntasks=4 --nodes=2 --ntasks-per-node=2 --cpus-per-task=2 --cpu-bind=cores prog arg"},
		{"srun with GPUs", func() *schema.Task {
			tk := task("auto", 2, 8, 4, 16)
			tk.Resources.GPUsPerTask = 1
			return tk
		}(), site("sbatch", "", "cores"), false, "srun --mpi=pmix --export=ALL --ntasks=8 --nodes=2 --ntasks-per-node=4 --cpus-per-task=16 --gpus-per-task=1 --cpu-bind=cores prog arg"},
		{"srun, no binding", task("auto", 0, 4, 0, 0), site("sbatch", "", "none"), false, "srun --mpi=pmix --export=ALL --ntasks=4 --cpu-bind=none prog arg"},
		{"mpirun on local", task("auto", 0, 4, 0, 0), site("local", "", ""), false, "mpirun -np 4 " + tether + " -x PATH " + rest + " prog arg"},
		{"mpirun resumed, warned", func() *schema.Task {
			tk := task("auto", 0, 2, 0, 0)
			tk.Signals.WarnBefore = schema.Duration(60e9)
			return tk
		}(), site("local", "", ""), true, "mpirun -np 2 " + tether + " -x TETHER_RESUME_FROM -x TETHER_WARN_SIGNAL -x PATH " + rest + " prog arg"},
		{"mpirun hybrid", task("auto", 0, 2, 0, 2), site("local", "", ""), false, "mpirun -np 2 --map-by slot:PE=2 " + tether + " -x PATH " + omp + " prog arg"},
		{"mpirun hybrid per node", task("auto", 2, 8, 4, 2), site("local", "", "cores"), false, "mpirun -np 8 --map-by ppr:4:node:PE=2 --bind-to core " + tether + " -x PATH " + omp + " prog arg"},
		{"mpirun hybrid unbound", task("auto", 2, 8, 4, 2), site("local", "", "none"), false, "mpirun -np 8 --map-by ppr:4:node --bind-to none " + tether + " -x PATH -x A -x B -x LD_LIBRARY_PATH -x OMP_NUM_THREADS -x SITE_X prog arg"},
		{"mpiexec hostfile on pbs", task("auto", 2, 8, 4, 0), site("pbs", "", ""), false, "mpiexec -n 8 --hostfile $PBS_NODEFILE --map-by ppr:4:node " + tether + " -x PATH " + rest + " prog arg"},
		{"mpiexec hostfile hybrid", task("auto", 2, 4, 2, 4), site("pbs", "", ""), false, "mpiexec -n 4 --hostfile $PBS_NODEFILE --map-by ppr:2:node:PE=4 " + tether + " -x PATH " + omp + " prog arg"},
		{"mpiexec pals", task("auto", 2, 8, 4, 0), site("pbs", "pals", ""), false, "mpiexec -n 8 --ppn 4 prog arg"},
		{"mpiexec pals hybrid", task("auto", 2, 8, 4, 2), site("pbs", "pals", ""), false, "mpiexec -n 8 --ppn 4 --depth 2 --cpu-bind depth prog arg"},
		{"mpiexec pals unbound", task("auto", 2, 8, 4, 2), site("pbs", "pals", "none"), false, "mpiexec -n 8 --ppn 4 --cpu-bind none prog arg"},
		{"explicit none", task("none", 0, 4, 0, 0), site("sbatch", "", ""), false, "prog arg"},
		{"ntasks from nodes", task("auto", 3, 0, 2, 0), site("sbatch", "", ""), false, "srun --mpi=pmix --export=ALL --ntasks=6 --nodes=3 --ntasks-per-node=2 prog arg"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			w, err := launchWords(c.task, c.site, []string{"prog", "arg"}, exported(c.task, c.site, c.resumed, false))
			if err != nil {
				t.Fatal(err)
			}
			parts := make([]string, len(w))
			for i, x := range w {
				parts[i] = x.String()
			}
			if got := strings.Join(parts, " "); got != c.want {
				t.Errorf("got  %s\nwant %s", got, c.want)
			}
		})
	}
}

// The OpenMP variables every rank gets with cpus_per_task.
func TestRankEnv(t *testing.T) {
	tk := schema.DefaultTask()
	tk.Resources.CPUsPerTask = 4
	s, _ := schema.ParseSite("s.toml", []byte("name='s'\nbackend='local'\n"))
	if got := rankEnv(&tk, s); got["OMP_NUM_THREADS"] != "4" || got["OMP_PLACES"] != "cores" || got["OMP_PROC_BIND"] != "close" {
		t.Errorf("bound: %v", got)
	}
	s.MPI.Bind = schema.BindNone
	if got := rankEnv(&tk, s); got["OMP_NUM_THREADS"] != "4" || len(got) != 1 {
		t.Errorf("unbound: %v", got)
	}
	tk.Resources.CPUsPerTask = 0
	if got := rankEnv(&tk, s); got != nil {
		t.Errorf("no cpus_per_task: %v", got)
	}
}

func TestQuote(t *testing.T) {
	for in, want := range map[string]string{"": "''", "abc": "abc", "a b": "'a b'", "it's": `'it'\''s'`, "$x": "'$x'", "/p/a-b_c.d": "/p/a-b_c.d"} {
		if got := Quote(in); got != want {
			t.Errorf("Quote(%q) = %s, want %s", in, got, want)
		}
	}
}
