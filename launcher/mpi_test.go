package launcher

import (
	"errors"
	"strings"
	"testing"

	"github.com/tether-hpc/tether/schema"
)

func errorsAs(err error, target any) bool { return errors.As(err, target) }

func TestLaunchWords(t *testing.T) {
	site := func(backend, style string) *schema.Site {
		body := "name='s'\nbackend='" + backend + "'\n"
		if style != "" {
			body += "[mpi]\nmpiexec_style='" + style + "'\n"
		}
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
		return &tk
	}
	cases := []struct {
		name string
		task *schema.Task
		site *schema.Site
		want string
	}{
		{"auto single task runs plainly", task("auto", 0, 1, 0, 0), site("sbatch", ""), "prog arg"},
		{"auto srun on slurm", task("auto", 2, 4, 2, 3), site("sbatch", ""), "srun --mpi=pmix --ntasks=4 --nodes=2 --ntasks-per-node=2 --cpus-per-task=3 prog arg"},
		{"auto mpirun on local", task("auto", 0, 4, 0, 0), site("local", ""), "mpirun -np 4 -x TETHER_RUN_ID -x TETHER_RUN_DIR -x TETHER_STATUS_FILE -x TETHER_ATTEMPT -x TETHER_ATTEMPT_DIR -x PATH -x A -x B prog arg"},
		{"mpiexec hostfile on pbs", task("auto", 2, 8, 4, 0), site("pbs", ""), "mpiexec -n 8 --hostfile $PBS_NODEFILE prog arg"},
		{"mpiexec pals", task("auto", 2, 8, 4, 0), site("pbs", "pals"), "mpiexec -n 8 --ppn 4 prog arg"},
		{"explicit none", task("none", 0, 4, 0, 0), site("sbatch", ""), "prog arg"},
		{"explicit srun with one task", task("srun", 0, 1, 0, 0), site("pbs", ""), "srun --mpi=pmix --ntasks=1 prog arg"},
		{"ntasks from nodes", task("auto", 3, 0, 2, 0), site("sbatch", ""), "srun --mpi=pmix --ntasks=6 --nodes=3 --ntasks-per-node=2 prog arg"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			w, err := launchWords(c.task, c.site, []string{"prog", "arg"})
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

func TestQuote(t *testing.T) {
	for in, want := range map[string]string{"": "''", "abc": "abc", "a b": "'a b'", "it's": `'it'\''s'`, "$x": "'$x'", "/p/a-b_c.d": "/p/a-b_c.d"} {
		if got := Quote(in); got != want {
			t.Errorf("Quote(%q) = %s, want %s", in, got, want)
		}
	}
}
