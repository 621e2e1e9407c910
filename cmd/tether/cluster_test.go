package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rogpeppe/go-internal/testscript"
)

// testCluster is one of the project's Slurm test clusters (testcluster/),
// described by the env file its start script writes.
type testCluster struct {
	key  string // bookworm | trixie
	env  map[string]string
	site map[string]string // kind (sbatch, rest, ...) -> site file
	// lock lets most scripts share the cluster and a few (node down,
	// slurmctld stopped) have it to themselves; lockFile does the same
	// between test processes (two `go test` runs on one machine). Take
	// both through hold.
	lock     sync.RWMutex
	lockFile string
}

// hold takes the cluster shared or exclusive, in this process and among
// all test processes (flock on lockFile), until release is called.
func (c *testCluster) hold(exclusive bool) (release func(), err error) {
	unlock := c.lock.RUnlock
	how := syscall.LOCK_SH
	if exclusive {
		c.lock.Lock()
		unlock, how = c.lock.Unlock, syscall.LOCK_EX
	} else {
		c.lock.RLock()
	}
	f, err := os.OpenFile(c.lockFile, os.O_CREATE|os.O_RDWR, 0o666)
	if err != nil {
		unlock()
		return nil, fmt.Errorf("cluster lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), how); err != nil {
		f.Close()
		unlock()
		return nil, fmt.Errorf("cluster lock %s: %w", c.lockFile, err)
	}
	return func() { f.Close(); unlock() }, nil // the close drops the flock
}

// holdShared takes the cluster shared for the rest of the test.
func (c *testCluster) holdShared(t *testing.T) {
	t.Helper()
	release, err := c.hold(false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(release)
}

func (c *testCluster) get(k string) string { return c.env[k] }

var (
	clustersOnce sync.Once
	clusters     []*testCluster
	clustersErr  error
)

// repoRoot is the repository's top directory.
func repoRoot() string {
	wd, _ := os.Getwd()
	return filepath.Clean(filepath.Join(wd, "..", ".."))
}

// loadClusters reads the test clusters' env files and site files.
func loadClusters() ([]*testCluster, error) {
	var out []*testCluster
	var missing []string
	for _, key := range []string{"bookworm", "trixie"} {
		envFile := filepath.Join("/tmp/tether-testcluster", key, "env.sh")
		if _, err := os.Stat(envFile); err != nil {
			missing = append(missing, envFile)
			continue
		}
		raw, err := exec.Command("bash", "-c", `set -a; source "$1"; env -0`, "bash", envFile).Output()
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", envFile, err)
		}
		c := &testCluster{key: key, env: map[string]string{}, site: map[string]string{}, lockFile: filepath.Join(filepath.Dir(envFile), "tests.lock")}
		for _, kv := range bytes.Split(raw, []byte{0}) {
			k, v, ok := strings.Cut(string(kv), "=")
			if ok && strings.HasPrefix(k, "TESTCLUSTER_") {
				c.env[k] = v
			}
		}
		for kind, k := range map[string]string{"sbatch": "TESTCLUSTER_SITE_SBATCH", "rest": "TESTCLUSTER_SITE_REST"} {
			f := c.get(k)
			if _, err := os.Stat(f); f != "" && err == nil {
				c.site[kind] = f
			} else {
				missing = append(missing, fmt.Sprintf("%s (%s of %s)", f, k, envFile))
			}
		}
		out = append(out, c)
	}
	if len(missing) > 0 {
		return out, fmt.Errorf("the Slurm test clusters are not running: missing %s (start them with `make testcluster`, as root on Debian)", strings.Join(missing, ", "))
	}
	return out, nil
}

// needClusters returns the running test clusters. Without them the test
// skips with what is missing, and under CI=true it fails.
func needClusters(t testing.TB) []*testCluster {
	t.Helper()
	clustersOnce.Do(func() { clusters, clustersErr = loadClusters() })
	if clustersErr != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal(clustersErr)
		}
		t.Skip(clustersErr)
	}
	return clusters
}

// sharedTether copies the test binary to the cluster's shared directory
// (once per test process), so that Tasks running inside the chroot cluster
// find `tether report` at the same path. It returns the copy's path.
func sharedTether(tb testing.TB, shared string) string {
	tb.Helper()
	dst := filepath.Join(shared, "bin", "tether")
	once, _ := sharedTetherOnce.LoadOrStore(shared, &sync.Once{})
	once.(*sync.Once).Do(func() {
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			tb.Fatal(err)
		}
		// a hard link, not a copy: a copy's write descriptor, inherited by
		// a process another test forks meanwhile, makes exec fail with
		// "text file busy"
		tmp := fmt.Sprintf("%s.%d", dst, os.Getpid())
		os.Remove(tmp)
		if err := os.Link(tetherBin, tmp); err != nil {
			data, err := os.ReadFile(tetherBin)
			if err != nil {
				tb.Fatal(err)
			}
			if err := os.WriteFile(tmp, data, 0o755); err != nil {
				tb.Fatal(err)
			}
		}
		if err := os.Rename(tmp, dst); err != nil {
			tb.Fatal(err)
		}
	})
	return dst
}

var sharedTetherOnce sync.Map // shared dir -> *sync.Once

// clusterParams runs the scripts in dir against one site of a cluster.
func clusterParams(t *testing.T, c *testCluster, site, dir string) testscript.Params {
	shared := c.get("TESTCLUSTER_SHARED_DIR")
	bin := sharedTether(t, shared)
	// Scripts' work directories must be under the shared directory (the
	// chroot cluster sees only that), and apart for every site variant:
	// testscript names them after the script alone.
	os.MkdirAll(filepath.Join(shared, "tests"), 0o777)
	root, err := os.MkdirTemp(filepath.Join(shared, "tests"), strings.ReplaceAll(t.Name(), "/", "_")+"-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(root, 0o755)
	t.Cleanup(func() {
		if !t.Failed() {
			os.RemoveAll(root)
		}
	})
	p := scriptParams(t, dir)
	p.WorkdirRoot = root
	setup := p.Setup
	p.Setup = func(env *testscript.Env) error {
		if err := setup(env); err != nil {
			return err
		}
		env.Setenv("PATH", filepath.Dir(bin)+string(os.PathListSeparator)+os.Getenv("PATH"))
		env.Setenv("SITE", site)
		env.Setenv("CLUSTER", c.key)
		env.Setenv("SLURM_VERSION", c.get("TESTCLUSTER_SLURM_VERSION"))
		env.Setenv("BIN", c.get("TESTCLUSTER_BIN_DIR"))
		env.Setenv("NODE", c.get("TESTCLUSTER_NODE"))
		env.Setenv("REST_SOCKET", c.get("TESTCLUSTER_REST_SOCKET"))
		env.Setenv("TESTCLUSTER_CTL", filepath.Join(repoRoot(), "testcluster", "ctl.sh"))
		env.Setenv("MPICC", c.get("TESTCLUSTER_MPICC"))
		env.Setenv("TETHER_SITE", site)
		// each script has its own state dir, under the shared directory
		env.Setenv("TETHER_STATE_DIR", filepath.Join(env.WorkDir, "state"))
		env.Values[clusterKey{}] = c
		return nil
	}
	p.Cmds["cluster"] = cmdCluster
	p.Cmds["node"] = cmdNode
	p.Cmds["daemon"] = cmdDaemon
	p.Cmds["slurm"] = cmdSlurm
	p.Cmds["sdiag"] = cmdSdiag
	return p
}

type clusterKey struct{}

// cluster shared|exclusive: hold the cluster for this script.
func cmdCluster(ts *testscript.TestScript, neg bool, args []string) {
	c := ts.Value(clusterKey{}).(*testCluster)
	if len(args) != 1 || (args[0] != "shared" && args[0] != "exclusive") {
		ts.Fatalf("usage: cluster shared|exclusive")
	}
	release, err := c.hold(args[0] == "exclusive")
	ts.Check(err)
	ts.Defer(release)
	ts.Setenv(holdVar, args[0])
}

// holdVar is where a script's `cluster` command records its hold.
const holdVar = "TETHER_TEST_CLUSTER_HOLD"

// needExclusive stops a script that would break the cluster (a node
// down, a daemon stopped, a link cut) without holding it exclusively:
// every other script's jobs would fail with it.
func needExclusive(ts *testscript.TestScript, what string) {
	if ts.Getenv(holdVar) != "exclusive" {
		ts.Fatalf("%s breaks the cluster for every script: say `cluster exclusive` first", what)
	}
}

// Every script of a shared cluster holds it (shared or exclusive), or an
// exclusive script could break it under that script's jobs: bind.txtar
// had no hold and ran while cut.txtar cut its node.
func TestClusterScriptsHoldTheCluster(t *testing.T) {
	t.Parallel()
	hold := regexp.MustCompile(`(?m)^cluster (shared|exclusive)$`)
	for _, glob := range []string{"slurm", "slurm-*", "multinode", "multinode-*"} {
		files, err := filepath.Glob(filepath.Join("testdata", glob, "*.txtar"))
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			if !hold.Match(b) {
				t.Errorf("%s: no `cluster shared` or `cluster exclusive` line", f)
			}
		}
	}
}

// node down|resume: set the cluster's node DOWN (resumed when the script
// ends, whatever happens) or resume it.
func cmdNode(ts *testscript.TestScript, neg bool, args []string) {
	c := ts.Value(clusterKey{}).(*testCluster)
	scontrol := filepath.Join(c.get("TESTCLUSTER_BIN_DIR"), "scontrol")
	node := c.get("TESTCLUSTER_NODE")
	resume := func() error {
		err := exec.Command(scontrol, "update", "nodename="+node, "state=resume").Run()
		// the next script may take the cluster at once: the node must be
		// back in the controller's eyes first, or its jobs pend with
		// ReqNodeNotAvail
		waitFor(30*time.Second, func() bool {
			out, _ := exec.Command(scontrol, "show", "node", node).Output()
			st := regexp.MustCompile(`State=(\S+)`).FindSubmatch(out)
			return st != nil && !regexp.MustCompile(`DOWN|DRAIN|NOT_RESPONDING|UNKNOWN`).Match(st[1])
		})
		return err
	}
	switch {
	case len(args) == 1 && args[0] == "down":
		needExclusive(ts, "node down")
		ts.Defer(func() { resume() })
		ts.Check(exec.Command(scontrol, "update", "nodename="+node, "state=down", "reason=tether-test").Run())
	case len(args) == 1 && args[0] == "resume":
		ts.Check(resume())
	default:
		ts.Fatalf("usage: node down|resume")
	}
}

// daemon stop|start NAME: stop a daemon of the cluster (slurmctld,
// slurmrestd; started again when the script ends, whatever happens) or
// start it.
func cmdDaemon(ts *testscript.TestScript, neg bool, args []string) {
	c := ts.Value(clusterKey{}).(*testCluster)
	if len(args) != 2 || (args[0] != "stop" && args[0] != "start") {
		ts.Fatalf("usage: daemon stop|start name")
	}
	ctl := func(action string) error {
		out, err := exec.Command(filepath.Join(repoRoot(), "testcluster", "ctl.sh"), c.key, args[1], action).CombinedOutput()
		if err != nil {
			return fmt.Errorf("ctl.sh %s %s %s: %v\n%s", c.key, args[1], action, err, out)
		}
		return nil
	}
	if args[0] == "stop" {
		needExclusive(ts, "daemon stop")
		ts.Defer(func() { ctl("start") })
	}
	ts.Check(ctl(args[0]))
}

// sdiag RPC VAR: set $VAR to slurmctld's count of RPC (sdiag's "Remote
// Procedure Call statistics by message type", e.g. REQUEST_SUBMIT_BATCH_JOB).
// Counts are the whole controller's: hold the cluster exclusively.
func cmdSdiag(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: sdiag RPC var")
	}
	needExclusive(ts, "sdiag (counts are the whole controller's)")
	c := ts.Value(clusterKey{}).(*testCluster)
	out, err := exec.Command(filepath.Join(c.get("TESTCLUSTER_BIN_DIR"), "sdiag")).Output()
	ts.Check(err)
	m := regexp.MustCompile(`(?m)^\s*` + regexp.QuoteMeta(args[0]) + `\s+\(\s*\d+\)\s+count:(\d+)`).FindSubmatch(out)
	n := "0"
	if m != nil {
		n = string(m[1])
	}
	ts.Setenv(args[1], n)
}

// slurm CMD ARGS...: run a Slurm command of the script's cluster.
func cmdSlurm(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) < 1 {
		ts.Fatalf("usage: slurm command [args...]")
	}
	c := ts.Value(clusterKey{}).(*testCluster)
	err := ts.Exec(filepath.Join(c.get("TESTCLUSTER_BIN_DIR"), args[0]), args[1:]...)
	if (err != nil) != neg {
		ts.Fatalf("slurm %s: %v", strings.Join(args, " "), err)
	}
}

// TestSlurmSbatch runs the Slurm state matrix, and the scripts about node
// failure and controller outages, through the CLI with the sbatch backend
// on every test cluster.
func TestSlurmSbatch(t *testing.T) {
	t.Parallel()
	for _, c := range needClusters(t) {
		for _, dir := range []string{"testdata/slurm", "testdata/slurm-sbatch"} {
			t.Run(c.key+"/"+filepath.Base(dir), func(t *testing.T) {
				t.Parallel()
				testscript.Run(t, clusterParams(t, c, c.site["sbatch"], dir))
			})
		}
	}
}

// restVariants are the slurmrestd sites the matrix runs against: every API
// version each cluster speaks, and once over the unix socket.
func restVariants(t *testing.T, c *testCluster) map[string]string {
	base, err := os.ReadFile(c.site["rest"])
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	variant := func(name string, edit func(string) string) string {
		p := filepath.Join(dir, name+".toml")
		body := edit(string(base))
		body = strings.Replace(body, `name = "`, `name = "`+name+`-`, 1)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	pin := func(v string) func(string) string {
		return func(s string) string { return strings.Replace(s, `api_version = "auto"`, `api_version = "`+v+`"`, 1) }
	}
	out := map[string]string{"auto": c.site["rest"]}
	if c.key == "trixie" {
		out["v0.0.40"] = variant("v0040", pin("v0.0.40"))
		out["v0.0.41"] = variant("v0041", pin("v0.0.41"))
		out["v0.0.42"] = variant("v0042", pin("v0.0.42"))
		// the JWT socket: the same auth as TCP, so jobs run as the same user
		sock := c.get("TESTCLUSTER_REST_JWT_SOCKET")
		out["socket"] = variant("socket", func(s string) string {
			var keep []string
			for _, line := range strings.Split(s, "\n") {
				if strings.HasPrefix(line, "url = ") {
					line = `url = "unix://` + sock + `"`
				}
				keep = append(keep, line)
			}
			return strings.Join(keep, "\n")
		})
		delete(out, "auto") // auto picks v0.0.42: run that once, pinned
	}
	return out
}

// TestSlurmREST runs the Slurm state matrix through the CLI with the
// slurmrest backend: 22.05 with v0.0.38, 24.11 with each of v0.0.40, v0.0.41
// and v0.0.42, and once over the unix socket; plus the REST-only scripts.
func TestSlurmREST(t *testing.T) {
	t.Parallel()
	for _, c := range needClusters(t) {
		for name, site := range restVariants(t, c) {
			t.Run(c.key+"/"+name, func(t *testing.T) {
				t.Parallel()
				testscript.Run(t, clusterParams(t, c, site, "testdata/slurm"))
			})
		}
		t.Run(c.key+"/slurm-rest", func(t *testing.T) {
			t.Parallel()
			testscript.Run(t, clusterParams(t, c, c.site["rest"], "testdata/slurm-rest"))
		})
	}
}

// waitFor polls cond up to d.
func waitFor(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if cond() {
			return true
		}
		time.Sleep(100 * time.Millisecond)
	}
	return cond()
}
