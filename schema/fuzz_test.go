package schema

import (
	"strings"
	"testing"
)

// FuzzParseTask: any input gives a task or an error naming a key or a
// line, never a panic; an accepted task is self-consistent.
func FuzzParseTask(f *testing.F) {
	f.Add([]byte(goodTask))
	f.Add([]byte("name='x'\ncommand=['a']\n[resources]\nntasks=-1\n"))
	f.Add([]byte("name = \"x\"\nscript = '''\necho hi\n'''\n[env]\nA = { b = 1 }\n"))
	f.Add([]byte("[[resources]]\nx=1\n"))
	site, err := ParseSite("site.toml", []byte("name='s'\nbackend='local'\nmax_walltime='1h'\n[defaults]\nwalltime='10m'\n"))
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		task, err := ParseTask("task.toml", data, nil, site)
		if err != nil {
			if task != nil {
				t.Fatalf("a task and an error: %v", err)
			}
			if strings.TrimSpace(err.Error()) == "" {
				t.Fatal("empty error message")
			}
			return
		}
		if task.Name == "" || (len(task.Command) == 0) == (task.Script == "") {
			t.Fatalf("accepted an invalid task: %+v", task)
		}
		if task.Resources.TotalTasks() < 1 || task.Resources.Walltime <= 0 || task.Resources.Walltime > site.MaxWalltime {
			t.Fatalf("accepted impossible resources: %+v", task.Resources)
		}
		if task.Proceed.MinFraction < 0 || task.Proceed.MinFraction > 1 {
			t.Fatalf("accepted min_fraction %v", task.Proceed.MinFraction)
		}
	})
}

// FuzzParseSite: any input gives a site or an error, never a panic.
func FuzzParseSite(f *testing.F) {
	f.Add([]byte("name='s'\nbackend='local'\n"))
	f.Add([]byte("name='s'\nbackend='slurmrest'\n[slurmrest]\nurl='http://h:6820'\ntoken_file='/t'\n"))
	f.Add([]byte("name='s'\nbackend='sbatch'\n[sbatch]\nenv={SLURM_CONF='/etc/slurm.conf'}\n[poll]\nmin_interval='1s'\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := ParseSite("site.toml", data)
		if err != nil {
			if s != nil || strings.TrimSpace(err.Error()) == "" {
				t.Fatalf("bad error result: %v %v", s, err)
			}
			return
		}
		switch s.Backend {
		case BackendLocal, BackendPBS, BackendSbatch, BackendSlurmREST:
		default:
			t.Fatalf("accepted backend %q", s.Backend)
		}
		if s.Poll.MinInterval > s.Poll.MaxInterval {
			t.Fatalf("poll bounds inverted: %+v", s.Poll)
		}
	})
}
