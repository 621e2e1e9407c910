package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/rogpeppe/go-internal/testscript"
)

var (
	multinodeOnce sync.Once
	multinode     *testCluster
	multinodeErr  error
)

// needMultinode returns the 3-node test cluster (testcluster/multinode.sh);
// without it the test skips saying so, and fails under CI=true.
func needMultinode(t testing.TB) *testCluster {
	t.Helper()
	multinodeOnce.Do(func() {
		envFile := "/tmp/tether-testcluster/multinode/env.sh"
		if _, err := os.Stat(envFile); err != nil {
			multinodeErr = fmt.Errorf("the multi-node test cluster is not running: no %s (start it with `make testcluster`, as root on Debian)", envFile)
			return
		}
		raw, err := exec.Command("bash", "-c", `set -a; source "$1"; env -0`, "bash", envFile).Output()
		if err != nil {
			multinodeErr = err
			return
		}
		c := &testCluster{key: "multinode", env: map[string]string{}, site: map[string]string{}, lockFile: filepath.Join(filepath.Dir(envFile), "tests.lock")}
		for _, kv := range bytes.Split(raw, []byte{0}) {
			k, v, ok := strings.Cut(string(kv), "=")
			if ok && strings.HasPrefix(k, "TESTCLUSTER_") {
				c.env[k] = v
			}
		}
		c.site["sbatch"], c.site["rest"] = c.get("TESTCLUSTER_SITE_SBATCH"), c.get("TESTCLUSTER_SITE_REST")
		multinode = c
	})
	if multinodeErr != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal(multinodeErr)
		}
		t.Skip(multinodeErr)
	}
	return multinode
}

// TestMultinode runs the multi-node scripts through the CLI with the
// sbatch and slurmrest backends. Every script cuts a node or needs two
// free nodes, so they take the cluster one at a time.
func TestMultinode(t *testing.T) {
	t.Parallel()
	c := needMultinode(t)
	for _, v := range []struct{ kind, dir string }{
		{"sbatch", "testdata/multinode"}, {"rest", "testdata/multinode"},
		{"sbatch", "testdata/multinode-sbatch"}, {"rest", "testdata/multinode-rest"},
	} {
		kind := v.kind
		t.Run(kind+"/"+filepath.Base(v.dir), func(t *testing.T) {
			t.Parallel()
			p := clusterParams(t, c, c.site[kind], v.dir)
			mpi := haveMPI(t) // here: Setup and Condition run in the scripts' goroutines
			setup := p.Setup
			p.Setup = func(env *testscript.Env) error {
				if err := setup(env); err != nil {
					return err
				}
				env.Setenv("BACKEND", kind)
				env.Setenv("MULTINODE", c.get("TESTCLUSTER_MULTINODE"))
				addr, err := freeAddrErr()
				if err != nil {
					return err
				}
				env.Setenv("MONITOR_ADDR", addr)
				return nil
			}
			p.Cmds["link"] = multinodeCmd("cut", "restore")
			p.Cmds["slurmd"] = multinodeCmd("kill-slurmd", "start-slurmd")
			p.Condition = func(cond string) (bool, error) {
				switch cond {
				case "sbatch", "rest":
					return cond == kind, nil
				case "mpi":
					return mpi, nil
				}
				return false, fmt.Errorf("unknown condition %q", cond)
			}
			testscript.Run(t, p)
		})
	}
}

// multinodeCmd makes `link cut|restore NODE` and `slurmd kill|start NODE`:
// the breaking action is undone when the script ends, whatever happens.
func multinodeCmd(breakVerb, fixVerb string) func(ts *testscript.TestScript, neg bool, args []string) {
	return func(ts *testscript.TestScript, neg bool, args []string) {
		if len(args) != 2 {
			ts.Fatalf("usage: link|slurmd cut|restore|kill|start NODE")
		}
		c := ts.Value(clusterKey{}).(*testCluster)
		script := c.get("TESTCLUSTER_MULTINODE")
		run := func(verb string) error {
			out, err := exec.Command(script, verb, args[1]).CombinedOutput()
			if err != nil {
				return fmt.Errorf("%s %s %s: %v\n%s", filepath.Base(script), verb, args[1], err, out)
			}
			return nil
		}
		switch args[0] {
		case "cut", "kill":
			needExclusive(ts, strings.Join(args, " "))
			ts.Defer(func() { run(fixVerb) })
			ts.Check(run(breakVerb))
		case "restore", "start":
			ts.Check(run(fixVerb))
		default:
			ts.Fatalf("unknown action %q", args[0])
		}
	}
}
