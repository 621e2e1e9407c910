package pbsemu

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Commands installed as links to the pbsemu binary.
var Commands = []string{"qsub", "qstat", "qdel", "qrls", "qselect", "pbsnodes"}

const pbsemuUsage = `usage: pbsemu <command> [args]   (state directory: $PBSEMU_HOME)
  start [-timeout 10s]     start the server in the background and wait until it answers
  stop [-kill-jobs]        stop the server; running jobs go on unless -kill-jobs
  server                   run the server in the foreground
  status                   exit 0 when the server answers
  sched on|off             set the server attribute "scheduling"
  install DIR              put qsub, qstat, qdel, qrls, qselect, pbsnodes links in DIR
  mom SEQ|SEQ[IDX]         (internal) supervise job SEQ or subjob SEQ[IDX]
Invoked as qsub, qstat, qdel, qrls, qselect or pbsnodes it acts as that command.
`

// Main runs the program named by args[0] and returns its exit status.
func Main(args []string, o IO) int {
	in := InstanceFromEnv()
	name := filepath.Base(args[0])
	rest := args[1:]
	if name == "pbsemu" || strings.HasPrefix(name, "pbsemu") {
		if len(rest) == 0 {
			fmt.Fprint(o.Stderr, pbsemuUsage)
			return 2
		}
		name, rest = rest[0], rest[1:]
	}
	if len(rest) == 1 && rest[0] == "--version" {
		cfg, _ := in.LoadConfig()
		fmt.Fprintf(o.Stdout, "pbs_version = %s\n", cfg.PBSVersion)
		return 0
	}
	switch name {
	case "qsub":
		return Qsub(in, rest, o)
	case "qstat":
		return Qstat(in, rest, o)
	case "qdel":
		return Qdel(in, rest, o)
	case "qrls":
		return Qrls(in, rest, o)
	case "qselect":
		return Qselect(in, rest, o)
	case "pbsnodes":
		return Pbsnodes(in, rest, o)
	case "server":
		if err := RunServer(in); err != nil {
			fmt.Fprintln(o.Stderr, "pbsemu server:", err)
			return 1
		}
		return 0
	case "mom":
		if len(rest) != 1 {
			fmt.Fprint(o.Stderr, pbsemuUsage)
			return 2
		}
		if _, err := in.momDir(rest[0]); err != nil {
			fmt.Fprint(o.Stderr, pbsemuUsage)
			return 2
		}
		if err := RunMom(in, rest[0]); err != nil {
			fmt.Fprintln(o.Stderr, "pbsemu mom:", err)
			return 1
		}
		return 0
	case "start":
		timeout := 10 * time.Second
		if len(rest) == 2 && rest[0] == "-timeout" {
			d, err := time.ParseDuration(rest[1])
			if err != nil {
				fmt.Fprint(o.Stderr, pbsemuUsage)
				return 2
			}
			timeout = d
		}
		if err := Start(in, timeout); err != nil {
			fmt.Fprintln(o.Stderr, "pbsemu start:", err)
			return 1
		}
		return 0
	case "stop":
		kill := len(rest) == 1 && rest[0] == "-kill-jobs"
		if err := Stop(in, kill, 10*time.Second); err != nil {
			fmt.Fprintln(o.Stderr, "pbsemu stop:", err)
			return 1
		}
		return 0
	case "status":
		if _, err := in.call(Request{Op: "server"}); err != nil {
			fmt.Fprintln(o.Stderr, "pbsemu: server is down")
			return 1
		}
		fmt.Fprintln(o.Stdout, "pbsemu: server is up")
		return 0
	case "sched":
		if len(rest) != 1 || (rest[0] != "on" && rest[0] != "off") {
			fmt.Fprint(o.Stderr, pbsemuUsage)
			return 2
		}
		if _, err := in.call(Request{Op: "scheduling", On: rest[0] == "on"}); err != nil {
			fmt.Fprintln(o.Stderr, "pbsemu: server is down")
			return 1
		}
		return 0
	case "install":
		if len(rest) != 1 {
			fmt.Fprint(o.Stderr, pbsemuUsage)
			return 2
		}
		if err := Install(rest[0]); err != nil {
			fmt.Fprintln(o.Stderr, "pbsemu install:", err)
			return 1
		}
		return 0
	}
	fmt.Fprint(o.Stderr, pbsemuUsage)
	return 2
}

// Install creates the command links in dir, pointing at this executable.
func Install(dir string) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, c := range Commands {
		p := filepath.Join(dir, c)
		_ = os.Remove(p)
		if err := os.Symlink(self, p); err != nil {
			return err
		}
	}
	return nil
}

// Start runs "pbsemu server" in the background (its own session, output in
// server.log) and waits until it answers.
func Start(in Instance, timeout time.Duration) error {
	if _, err := in.call(Request{Op: "server"}); err == nil {
		return errors.New("server already running")
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(in.Home, 0o755); err != nil {
		return err
	}
	out, err := os.OpenFile(in.path("server.out"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer out.Close()
	cmd := exec.Command(self, "server")
	cmd.Env = append(os.Environ(), EnvHome+"="+in.Home)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if _, err := in.call(Request{Op: "server"}); err == nil {
			return nil
		}
		select {
		case err := <-exited:
			b, _ := os.ReadFile(in.path("server.out"))
			return fmt.Errorf("server exited (%v): %s", err, strings.TrimSpace(string(b)))
		case <-time.After(20 * time.Millisecond):
		}
	}
	return fmt.Errorf("server did not answer within %s", timeout)
}

// Stop asks the server to stop and waits for its process to exit. With
// killJobs, running jobs and their supervisors are killed as well.
func Stop(in Instance, killJobs bool, timeout time.Duration) error {
	pid := 0
	if b, err := os.ReadFile(in.path("server.pid")); err == nil {
		pid, _ = strconv.Atoi(strings.TrimSpace(string(b)))
	}
	if _, err := in.call(Request{Op: "shutdown", On: killJobs}); err != nil {
		if pid > 0 && pidAlive(pid) {
			_ = syscall.Kill(pid, syscall.SIGTERM)
		} else {
			return nil
		}
	}
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		_, err := os.Stat(in.path("server.pid"))
		if (pid == 0 || !pidAlive(pid)) && errors.Is(err, os.ErrNotExist) {
			return nil
		}
		if pid > 0 && !pidAlive(pid) {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	if pid > 0 {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	return fmt.Errorf("server did not stop within %s", timeout)
}
