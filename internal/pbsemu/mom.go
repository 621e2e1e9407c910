package pbsemu

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// RunMom is the per-job supervisor (the emulated pbs_mom for one job). The
// server starts it detached; it runs the job script in its own session,
// enforces walltime, kills the job when asked (SIGUSR1: qdel, SIGUSR2:
// qdel -W force), delivers stdout/stderr and records the outcome in
// jobs/<seq>/mom.json (jobs/<seq>/sub/<index>/mom.json for subjob
// "<seq>[<index>]" of an array). It outlives a stopped server.
func RunMom(in Instance, key string) error {
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGUSR1, syscall.SIGUSR2)
	// Catch (rather than ignore) the signals the supervisor must survive:
	// an ignored disposition would be inherited by the job across exec.
	ignored := make(chan os.Signal, 4)
	signal.Notify(ignored, syscall.SIGHUP, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		for range ignored {
		}
	}()

	cfg, err := in.LoadConfig()
	if err != nil {
		return err
	}
	dir, err := in.momDir(key)
	if err != nil {
		return err
	}
	b, err := os.ReadFile(filepath.Join(dir, "job.json"))
	if err != nil {
		return err
	}
	var j Job
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	m := &mom{in: in, cfg: cfg, job: &j, dir: dir}
	return m.run(sigs)
}

type mom struct {
	in    Instance
	cfg   Config
	job   *Job
	dir   string
	state momState
}

func (m *mom) write() {
	m.state.V = 1
	b, _ := json.Marshal(m.state)
	if err := writeFileAtomic(filepath.Join(m.dir, "mom.json"), b, 0o644); err != nil {
		fmt.Fprintln(os.Stderr, "pbsemu mom: write state:", err)
	}
}

// hostPath strips the "host:" prefix of Output_Path/Error_Path.
func hostPath(p string) string {
	if _, after, ok := strings.Cut(p, ":"); ok {
		return after
	}
	return p
}

func (m *mom) umask() os.FileMode {
	if m.job.Umask != "" {
		if v, err := strconv.ParseUint(m.job.Umask, 8, 32); err == nil {
			return os.FileMode(v)
		}
	}
	return 0o077
}

// outputTargets returns the files the job writes to while it runs and
// where they go at the end ("" when written in place).
func (m *mom) outputTargets() (outLive, errLive, outFinal, errFinal string) {
	j := m.job
	spool := m.in.path("spool")
	seq := strconv.Itoa(j.Seq)
	if j.isSubjob() {
		seq += "." + strconv.Itoa(j.ArrayIndex) // start_exec.c std_file_name: <name>.o<seq>.<index>
	}
	outFinal, errFinal = hostPath(j.OutputPath), hostPath(j.ErrorPath)
	outLive = filepath.Join(spool, j.ID+".OU")
	errLive = filepath.Join(spool, j.ID+".ER")
	keep := j.KeepFiles
	switch {
	case strings.Contains(keep, "d"):
		outLive, errLive = outFinal, errFinal
		outFinal, errFinal = "", ""
	default:
		if strings.Contains(keep, "o") {
			outLive, outFinal = filepath.Join(j.Home, j.Name+".o"+seq), ""
		}
		if strings.Contains(keep, "e") {
			errLive, errFinal = filepath.Join(j.Home, j.Name+".e"+seq), ""
		}
	}
	switch j.JoinPath {
	case "oe":
		errLive, errFinal = "", ""
	case "eo":
		outLive, outFinal = "", ""
	}
	return
}

func (m *mom) env(nodefile, tmpdir string) []string {
	j := m.job
	env := map[string]string{}
	for k, v := range m.cfg.JobEnvironment {
		env[k] = v
	}
	shell := m.shell()
	env["MAIL"] = "/var/mail/" + j.User
	for _, kv := range j.VariableList {
		env[kv.K] = kv.V
	}
	// Then the values that belong to this job, as start_exec.c does: the
	// submitter's HOME, LOGNAME, USER and SHELL in Variable_List (qsub -V)
	// do not survive.
	env["HOME"] = j.Home
	env["LOGNAME"] = j.User
	env["USER"] = j.User
	env["SHELL"] = shell
	first := Chunk{Count: 1}
	if len(j.Resources.Chunks) > 0 {
		first = j.Resources.Chunks[0]
	}
	// OMP_NUM_THREADS and NCPUS are both the first chunk's ompthreads,
	// which defaults to its ncpus.
	omp := first.intRes("ompthreads", first.intRes("ncpus", 1))
	cookie := make([]byte, 16)
	_, _ = rand.Read(cookie)
	for k, v := range map[string]string{
		"PBS_JOBID":       j.ID,
		"PBS_JOBNAME":     j.Name,
		"PBS_QUEUE":       j.Queue,
		"PBS_NODEFILE":    nodefile,
		"PBS_ENVIRONMENT": "PBS_BATCH",
		"PBS_JOBDIR":      j.Home,
		"PBS_MOMPORT":     "15003",
		"PBS_NODENUM":     "0",
		"PBS_TASKNUM":     "1",
		"PBS_JOBCOOKIE":   strings.ToUpper(hex.EncodeToString(cookie)),
		"NCPUS":           strconv.Itoa(omp),
		"OMP_NUM_THREADS": strconv.Itoa(omp),
		"TMPDIR":          tmpdir,
		"ENVIRONMENT":     "BATCH",
		EnvHome:           m.in.Home,
	} {
		env[k] = v
	}
	if j.Account != "" {
		env["PBS_ACCOUNT"] = j.Account
	}
	if j.isSubjob() {
		env["PBS_ARRAY_INDEX"] = strconv.Itoa(j.ArrayIndex)
		env["PBS_ARRAY_ID"] = j.ArrayID
	}
	out := make([]string, 0, len(env))
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	return out
}

func (m *mom) shell() string {
	if m.job.ShellPath != "" {
		return strings.Split(m.job.ShellPath, ",")[0]
	}
	if m.job.Shell != "" {
		return m.job.Shell
	}
	return "/bin/sh"
}

// shellQuote quotes a path for the shell when it has special characters
// (the MoM's own paths never do).
func shellQuote(p string) string {
	if strings.IndexFunc(p, func(r rune) bool {
		return !(r == '/' || r == '.' || r == '_' || r == '-' || r == '+' || r == ':' ||
			(r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z') || (r >= '0' && r <= '9'))
	}) < 0 {
		return p
	}
	return "'" + strings.ReplaceAll(p, "'", `'\''`) + "'"
}

func openOut(path string, perm os.FileMode) (*os.File, error) {
	if path == "" {
		return nil, nil
	}
	return os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, perm)
}

func (m *mom) run(sigs chan os.Signal) error {
	j := m.job
	nodefile := m.in.path("aux", j.ID)
	tmpdir := m.in.path("tmp", "pbs."+j.ID)
	_ = os.MkdirAll(tmpdir, 0o700)
	perm := 0o666 &^ m.umask()
	outLive, errLive, outFinal, errFinal := m.outputTargets()
	outF, err := openOut(outLive, perm)
	if err != nil {
		return m.abort(fmt.Errorf("open stdout: %w", err))
	}
	errF, err := openOut(errLive, perm)
	if err != nil {
		return m.abort(fmt.Errorf("open stderr: %w", err))
	}
	if outF == nil {
		outF = errF
	}
	if errF == nil {
		errF = outF
	}
	var cmd *exec.Cmd
	if j.Executable != "" {
		cmd = exec.Command(j.Executable, j.Args...)
		cmd.Stdin = nil
	} else {
		shell := m.shell()
		cmd = exec.Command(shell)
		if m.cfg.LoginShell == nil || *m.cfg.LoginShell {
			cmd.Args = []string{"-" + filepath.Base(shell)}
		}
		// Like the MoM (SHELL_INVOKE): the shell's stdin is a pipe that
		// carries one line, the path of the job script, which the shell
		// then runs as a command (so a #! line is honoured and the script
		// itself sees an exhausted stdin).
		script := filepath.Join(m.dir, j.ID+".SC")
		if j.isSubjob() {
			// the subjobs run their array's script
			script = filepath.Join(m.in.path("jobs", strconv.Itoa(j.Seq)), j.ArrayID+".SC")
		}
		if _, err := os.Stat(script); err != nil {
			return m.abort(err)
		}
		cmd.Stdin = strings.NewReader(shellQuote(script) + "\n")
	}
	cmd.Dir = j.Home
	if st, err := os.Stat(j.Home); err != nil || !st.IsDir() {
		cmd.Dir = "/"
	}
	cmd.Env = m.env(nodefile, tmpdir)
	cmd.Stdout, cmd.Stderr = outF, errF
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	syscall.Umask(int(m.umask()))
	start := time.Now()
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(errF, "=>> PBS: job could not start: %v\n", err)
		m.state = momState{Phase: "exiting", Start: start.Unix(), End: time.Now().Unix(), ExitStatus: -1}
		m.write()
		m.deliver(outLive, errLive, outFinal, errFinal, outF, errF)
		m.state.Phase = "done"
		m.write()
		return nil
	}
	pid := cmd.Process.Pid
	m.state = momState{Phase: "running", Pid: pid, SessionID: pid, Start: start.Unix()}
	m.write()

	waitErr := make(chan error, 1)
	go func() { waitErr <- cmd.Wait() }()
	check := time.NewTicker(m.cfg.WalltimeCheckInterval.D())
	defer check.Stop()
	var killTimer <-chan time.Time
	killing, forced := false, false
	var killStart time.Time
	beginKill := func(force, qdel bool) {
		if force {
			forced = true
			signalSession(pid, syscall.SIGKILL)
			return
		}
		if killing {
			return
		}
		killing, killStart = true, time.Now()
		if qdel && j.qdelExit(&m.cfg) == QdelExitJob && j.Executable == "" {
			// The top shell outlives the SIGTERM and exits with the
			// script's status (143 for a wrapper that traps TERM).
			signalSessionExcept(pid, pid, syscall.SIGTERM)
		} else {
			signalSession(pid, syscall.SIGTERM)
		}
		killTimer = time.After(m.cfg.KillDelay.D())
	}
	limit := j.Resources.Walltime
	cputLimit := -1
	if sec, ok := parseDuration(j.Resources.List["cput"]); ok {
		cputLimit = sec
	}
	var memLimit int64 // bytes; 0: not enforced
	if m.cfg.EnforceMem {
		memLimit, _ = parseSize(j.Resources.List["mem"])
	}
loop:
	for {
		select {
		case <-waitErr:
			break loop
		case s := <-sigs:
			beginKill(s == syscall.SIGUSR2, true)
		case <-killTimer:
			signalSession(pid, syscall.SIGKILL)
		case <-check.C:
			used := int(time.Since(start) / time.Second)
			cput, mem, vmem := sessionUsage(pid)
			if cput > m.state.CPUT {
				m.state.CPUT = cput
			}
			m.state.MemKB, m.state.VmemKB = mem, vmem
			// In the MoM's order (mom_main.c job_over_limit): mem (only
			// with $enforce mem), cput, walltime. The stderr line is the
			// MoM's log_buffer after "job killed: ".
			if m.state.Reason == "" {
				switch {
				case memLimit > 0 && mem*1024 > memLimit:
					fmt.Fprintf(errF, "=>> PBS: job killed: mem %dkb exceeded limit %dkb\n", mem, memLimit/1024)
					m.state.Reason = "mem"
				case cputLimit >= 0 && m.state.CPUT > cputLimit:
					fmt.Fprintf(errF, "=>> PBS: job killed: cput %d exceeded limit %d\n", m.state.CPUT, cputLimit)
					m.state.Reason = "cput"
				case limit >= 0 && used > limit:
					fmt.Fprintf(errF, "=>> PBS: job killed: walltime %d exceeded limit %d\n", used, limit)
					m.state.Reason = "walltime"
				}
				if m.state.Reason != "" {
					beginKill(false, false)
				}
			}
			m.write()
		}
	}
	// Like the MoM, which sends SIGKILL kill_delay after SIGTERM and only
	// then sends the obit: a deleted (or walltime-killed) job stays R for
	// kill_delay even when it died at once.
	if killing && !forced {
		wait := time.NewTimer(time.Until(killStart.Add(m.cfg.KillDelay.D())))
	delay:
		for {
			select {
			case <-wait.C:
				break delay
			case s := <-sigs:
				if s == syscall.SIGUSR2 {
					wait.Stop()
					break delay
				}
			}
		}
	}
	// The top shell is gone: whatever is left of the job's session goes too.
	signalSession(pid, syscall.SIGKILL)
	end := time.Now()
	st := cmd.ProcessState
	exit := 0
	if ws, ok := st.Sys().(syscall.WaitStatus); ok {
		switch {
		case ws.Exited():
			exit = ws.ExitStatus()
		case ws.Signaled():
			exit = 256 + int(ws.Signal())
		}
	}
	if ru, ok := st.SysUsage().(*syscall.Rusage); ok {
		cput := int((time.Duration(ru.Utime.Nano()) + time.Duration(ru.Stime.Nano())) / time.Second)
		if cput > m.state.CPUT {
			m.state.CPUT = cput
		}
		if ru.Maxrss > m.state.MemKB {
			m.state.MemKB = ru.Maxrss
		}
	}
	m.state.Phase, m.state.End, m.state.ExitStatus = "exiting", end.Unix(), exit
	m.write()
	m.deliver(outLive, errLive, outFinal, errFinal, outF, errF)
	_ = os.Remove(nodefile)
	_ = os.RemoveAll(tmpdir)
	m.state.Phase = "done"
	m.write()
	return nil
}

func (m *mom) abort(err error) error {
	now := time.Now().Unix()
	m.state = momState{Phase: "done", Start: now, End: now, ExitStatus: -1}
	m.write()
	return err
}

// deliver copies the spooled stdout/stderr to their final paths, like the
// MoM's stage-out at job end; undeliverable files go to undelivered/.
func (m *mom) deliver(outLive, errLive, outFinal, errFinal string, outF, errF *os.File) {
	if outF != nil {
		outF.Close()
	}
	if errF != nil && errF != outF {
		errF.Close()
	}
	perm := 0o666 &^ m.umask()
	for _, p := range [][2]string{{outLive, outFinal}, {errLive, errFinal}} {
		if p[0] == "" || p[1] == "" || p[0] == p[1] {
			continue
		}
		if err := copyFile(p[0], p[1], perm); err != nil {
			fmt.Fprintln(os.Stderr, "pbsemu mom: deliver", p[1], ":", err)
			_ = copyFile(p[0], m.in.path("undelivered", filepath.Base(p[0])), perm)
		}
		_ = os.Remove(p[0])
	}
}

func copyFile(src, dst string, perm os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, perm)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// sessionPids lists the processes of a session (from /proc).
func sessionPids(sid int) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if f := procStat(pid); len(f) > 3 && f[3] == strconv.Itoa(sid) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// procStat returns the fields of /proc/<pid>/stat after the command name,
// so that index 0 is the state (field 3) and index 3 the session id.
func procStat(pid int) []string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return nil
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return nil
	}
	return strings.Fields(s[i+1:])
}

// signalSession sends sig to every process of the job's session, as the
// MoM does (the job's processes may have left its process group).
func signalSession(sid int, sig syscall.Signal) {
	_ = syscall.Kill(-sid, sig)
	for _, pid := range sessionPids(sid) {
		_ = syscall.Kill(pid, sig)
	}
}

// signalSessionExcept signals every process of the session but one.
func signalSessionExcept(sid, spare int, sig syscall.Signal) {
	for _, pid := range sessionPids(sid) {
		if pid != spare {
			_ = syscall.Kill(pid, sig)
		}
	}
}

// sessionUsage sums CPU seconds, RSS and virtual size (kB) of a session.
func sessionUsage(sid int) (cput int, memKB, vmemKB int64) {
	var ticks int64
	for _, pid := range sessionPids(sid) {
		f := procStat(pid)
		if len(f) < 21 {
			continue
		}
		ut, _ := strconv.ParseInt(f[11], 10, 64)
		st, _ := strconv.ParseInt(f[12], 10, 64)
		ticks += ut + st
		vsize, _ := strconv.ParseInt(f[20], 10, 64)
		vmemKB += vsize / 1024
		if len(f) > 21 {
			rss, _ := strconv.ParseInt(f[21], 10, 64)
			memKB += rss * int64(os.Getpagesize()) / 1024
		}
	}
	return int(ticks / 100), memKB, vmemKB
}
