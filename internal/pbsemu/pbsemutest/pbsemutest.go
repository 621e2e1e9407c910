// Package pbsemutest starts OpenPBS emulator instances (internal/pbsemu)
// from Go tests: each instance has its own state directory, a bin directory
// with qsub/qstat/qdel/qrls/qselect/pbsnodes, and controls to take its
// server down and up again while jobs keep running.
//
//	func TestMain(m *testing.M) { os.Exit(pbsemutest.Main(m)) }
//
//	srv := pbsemutest.Start(t, pbsemutest.Options{NCPUs: 4})
//	cmd := srv.Command("qsub", "job.sh") // PATH and PBSEMU_HOME set
package pbsemutest

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tether-hpc/tether/internal/pbsemu"
)

// EnvBinary names a prebuilt pbsemu binary to use instead of building one.
const EnvBinary = "PBSEMU_BIN"

const pkgPath = "github.com/tether-hpc/tether/internal/pbsemu/cmd/pbsemu"

// built is the binary built by Main for the whole test process.
var built struct {
	sync.Mutex
	path string
}

// Main builds the pbsemu binary once for the test process, runs the tests
// and removes the build. Use it from TestMain.
func Main(m *testing.M) int {
	if os.Getenv(EnvBinary) == "" {
		dir, err := os.MkdirTemp("", "pbsemu-build-")
		if err != nil {
			fmt.Fprintln(os.Stderr, "pbsemutest:", err)
			return 1
		}
		defer os.RemoveAll(dir)
		p, err := Build(dir)
		if err != nil {
			fmt.Fprintln(os.Stderr, "pbsemutest:", err)
			return 1
		}
		built.Lock()
		built.path = p
		built.Unlock()
	}
	return m.Run()
}

// Build compiles the pbsemu program into dir and returns its path.
func Build(dir string) (string, error) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		goTool = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	out := filepath.Join(dir, "pbsemu")
	cmd := exec.Command(goTool, "build", "-o", out, pkgPath)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go build %s: %v: %s", pkgPath, err, stderr.String())
	}
	return out, nil
}

func binary(t testing.TB) string {
	if p := os.Getenv(EnvBinary); p != "" {
		return p
	}
	built.Lock()
	p := built.path
	built.Unlock()
	if p != "" {
		return p
	}
	p, err := Build(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// Options configure an instance. Zero values take test-friendly defaults
// (fast walltime checks and kill delay), which differ from OpenPBS's 10 s.
type Options struct {
	ServerName string // default "pbshost"
	NodeName   string // default ServerName; lines of PBS_NODEFILE
	NCPUs      int    // default 2
	Mem        string // default "24684100kb"
	NGPUs      int
	Queues     []pbsemu.QueueConfig // default one queue "workq"

	// DisableHistory turns job_history_enable off.
	DisableHistory bool
	// NoScheduling starts with the server attribute scheduling=False.
	NoScheduling bool

	WalltimeCheckInterval time.Duration // default 1s (OpenPBS: about 10s)
	KillDelay             time.Duration // default 1s (OpenPBS: 10s)
	PollInterval          time.Duration // default 50ms
	ExitingDelay          time.Duration // default 100ms

	// RejectRoot keeps acl_roots empty, so that root gets "Bad UID for job
	// execution" like a default OpenPBS. By default root may submit.
	RejectRoot bool
	// HomeDir is the job user's home (jobs start there). Default: a
	// directory "home" inside the instance, so tests leave $HOME alone;
	// set UsePasswdHome to use the real home instead.
	HomeDir       string
	UsePasswdHome bool
	// NoLoginShell runs the job shell as a plain (non-login) shell.
	NoLoginShell bool
	// JobEnvironment is the base environment of jobs (default PATH=/bin:/usr/bin).
	JobEnvironment map[string]string

	// Configure, if set, may change the configuration last.
	Configure func(*pbsemu.Config)
}

// Server is a running emulator instance.
type Server struct {
	t      testing.TB
	Home   string // PBSEMU_HOME
	BinDir string // holds qsub, qstat, qdel, qrls, qselect, pbsnodes, pbsemu
	bin    string
	mu     sync.Mutex
}

// Start creates an instance in a temporary directory, starts its server
// and registers a cleanup that stops it and kills its jobs.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	bin := binary(t)
	root := t.TempDir()
	s := &Server{t: t, Home: filepath.Join(root, "state"), BinDir: filepath.Join(root, "bin"), bin: bin}
	for _, d := range []string{s.Home, s.BinDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// Copies of the binary (not links) keep the instance independent of
	// the build directory's lifetime.
	// A hard link where possible: a copy is written through a file
	// descriptor that a process forked meanwhile by a parallel test may
	// still hold, and exec then fails with "text file busy".
	self := filepath.Join(s.BinDir, "pbsemu")
	if err := os.Link(bin, self); err != nil {
		data, err := os.ReadFile(bin)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(self, data, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range pbsemu.Commands {
		if err := os.Symlink("pbsemu", filepath.Join(s.BinDir, c)); err != nil {
			t.Fatal(err)
		}
	}
	cfg := pbsemu.DefaultConfig()
	set := func(dst *string, v string) {
		if v != "" {
			*dst = v
		}
	}
	set(&cfg.ServerName, opts.ServerName)
	set(&cfg.NodeName, opts.NodeName)
	set(&cfg.Mem, opts.Mem)
	if opts.NCPUs > 0 {
		cfg.NCPUs = opts.NCPUs
	}
	cfg.NGPUs = opts.NGPUs
	if len(opts.Queues) > 0 {
		cfg.Queues, cfg.DefaultQueue = opts.Queues, opts.Queues[0].Name
	}
	hist, sched, login := !opts.DisableHistory, !opts.NoScheduling, !opts.NoLoginShell
	cfg.JobHistoryEnable, cfg.Scheduling, cfg.LoginShell = &hist, &sched, &login
	dur := func(d time.Duration, def time.Duration) pbsemu.Duration {
		if d > 0 {
			return pbsemu.Duration(d)
		}
		return pbsemu.Duration(def)
	}
	cfg.WalltimeCheckInterval = dur(opts.WalltimeCheckInterval, time.Second)
	cfg.KillDelay = dur(opts.KillDelay, time.Second)
	cfg.PollInterval = dur(opts.PollInterval, 50*time.Millisecond)
	cfg.ExitingDelay = dur(opts.ExitingDelay, 100*time.Millisecond)
	if !opts.RejectRoot {
		cfg.ACLRoots = []string{"root"}
	}
	switch {
	case opts.HomeDir != "":
		cfg.HomeDir = opts.HomeDir
	case !opts.UsePasswdHome:
		cfg.HomeDir = filepath.Join(root, "home")
		if err := os.MkdirAll(cfg.HomeDir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if opts.JobEnvironment != nil {
		cfg.JobEnvironment = opts.JobEnvironment
	}
	cfg.OwnerPID = os.Getpid()
	if opts.Configure != nil {
		opts.Configure(&cfg)
	}
	if err := (pbsemu.Instance{Home: s.Home}).WriteConfig(cfg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	s.Up()
	return s
}

// Env returns the environment for running the commands of this instance:
// the current environment with PBSEMU_HOME set and BinDir first on PATH.
func (s *Server) Env() []string {
	env := make([]string, 0, len(os.Environ())+2)
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "PATH=") || strings.HasPrefix(kv, pbsemu.EnvHome+"=") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, pbsemu.EnvHome+"="+s.Home, "PATH="+s.BinDir+string(os.PathListSeparator)+os.Getenv("PATH"))
}

// Command returns an exec.Cmd for one of the instance's commands (qsub,
// qstat, ...) with the instance's environment.
func (s *Server) Command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(filepath.Join(s.BinDir, name), args...)
	cmd.Env = s.Env()
	return cmd
}

// Result is the outcome of Run.
type Result struct {
	Stdout, Stderr string
	Code           int
}

// Run runs a command of the instance in dir (the test's working directory
// when empty) and returns its output and exit status.
func (s *Server) Run(dir, name string, args ...string) Result {
	s.t.Helper()
	cmd := s.Command(name, args...)
	cmd.Dir = dir
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := Result{Stdout: out.String(), Stderr: errb.String()}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		r.Code = ee.ExitCode()
	case err != nil:
		s.t.Fatalf("run %s: %v", name, err)
	}
	return r
}

func (s *Server) admin(args ...string) error {
	cmd := s.Command("pbsemu", args...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("pbsemu %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return nil
}

// Down stops the server as if pbs_server went down: commands fail like
// OpenPBS's when the server is unreachable; running jobs carry on. It
// fails the test that started the server, so call it from that test's
// goroutine; elsewhere (a testscript command) use SetDown.
func (s *Server) Down() {
	s.t.Helper()
	if err := s.SetDown(true); err != nil {
		s.t.Fatal(err)
	}
}

// Up starts the server (again); it picks up jobs that ended meanwhile.
// Like Down, it is for the goroutine of the test that started the server.
func (s *Server) Up() {
	s.t.Helper()
	if err := s.SetDown(false); err != nil {
		s.t.Fatal(err)
	}
}

// SetDown stops (true) or starts (false) the server like Down and Up,
// returning the error instead of failing the test.
func (s *Server) SetDown(down bool) error {
	if down {
		return s.admin("stop")
	}
	return s.admin("start")
}

// Stop stops the server and kills all running jobs. It is registered as a
// cleanup by Start.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	// A server that is down still has supervisors running jobs: bring it
	// up so that it kills them on the way out.
	if s.admin("status") != nil {
		if err := s.admin("start"); err != nil {
			s.t.Log(err)
			return
		}
	}
	if err := s.admin("stop", "-kill-jobs"); err != nil {
		s.t.Log(err)
	}
}

// SetScheduling sets the server attribute scheduling (false keeps jobs Q).
func (s *Server) SetScheduling(on bool) {
	s.t.Helper()
	arg := "off"
	if on {
		arg = "on"
	}
	if err := s.admin("sched", arg); err != nil {
		s.t.Fatal(err)
	}
}

// Configure changes config.json; the server rereads it within a poll
// interval (queues, history, node size, delays...).
func (s *Server) Configure(change func(*pbsemu.Config)) {
	s.t.Helper()
	in := pbsemu.Instance{Home: s.Home}
	cfg, err := in.LoadConfig()
	if err != nil {
		s.t.Fatal(err)
	}
	change(&cfg)
	if err := in.WriteConfig(cfg); err != nil {
		s.t.Fatal(err)
	}
	// The server notices the change by mtime; make sure it differs.
	now := time.Now().Add(time.Second)
	_ = os.Chtimes(filepath.Join(s.Home, pbsemu.ConfigFile), now, now)
}
