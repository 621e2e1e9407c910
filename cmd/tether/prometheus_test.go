package main

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// freeAddrErr returns a local address that was free a moment ago (for
// scripts that must know the monitor's address beforehand; processes the
// Go tests start listen on port 0 and report theirs instead). It returns
// its error: testscript Setup cannot call t.Fatal.
func freeAddrErr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// needPrometheus finds Prometheus; CI must have it (make test installs it).
func needPrometheus(t *testing.T) string {
	p, err := exec.LookPath("prometheus")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("prometheus is not installed (apt install prometheus); CI must run the alert tests")
		}
		t.Skip("prometheus is not installed (apt install prometheus)")
	}
	return p
}

// startProcess starts a long-running process and stops it (by its pid)
// when the test ends.
func startProcess(t *testing.T, env []string, name string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = env
	logf, _ := os.Create(filepath.Join(t.TempDir(), filepath.Base(name)+".log"))
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
		}
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("%s log:\n%s", name, tail(string(b), 3000))
		}
	})
	return cmd
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// startPrometheus scrapes the monitor every second and evaluates the
// project's alert rules every second, with their `for:` set to 0 so the
// test does not wait minutes.
func startPrometheus(t *testing.T, monitorAddr string) string {
	bin := needPrometheus(t)
	dir := t.TempDir()
	rules, err := os.ReadFile(filepath.Join(repoRoot(), "deploy", "prometheus", "tether-rules.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var fast []string
	for _, l := range strings.Split(string(rules), "\n") {
		if strings.TrimSpace(l) == "for: 1m" || strings.TrimSpace(l) == "for: 2m" {
			l = strings.Replace(l, strings.TrimSpace(l), "for: 0s", 1)
		}
		fast = append(fast, l)
	}
	os.WriteFile(filepath.Join(dir, "rules.yml"), []byte(strings.Join(fast, "\n")), 0o644)
	cfg := fmt.Sprintf(`global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files: [%q]
scrape_configs:
  - job_name: tether-monitor
    static_configs:
      - targets: [%q]
`, filepath.Join(dir, "rules.yml"), monitorAddr)
	os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(cfg), 0o644)
	// port 0, and the port from its log: a port found free beforehand may
	// be taken by the time the process listens
	cmd := startProcess(t, tetherEnv(), bin, "--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "data"), "--web.listen-address=127.0.0.1:0")
	url := "http://" + logAddr(t, cmd, `msg="Listening on" address=(127\.0\.0\.1:[0-9]+)`)
	if !waitFor(30*time.Second, func() bool {
		r, err := http.Get(url + "/-/ready")
		if err != nil {
			return false
		}
		r.Body.Close()
		return r.StatusCode == 200
	}) {
		t.Fatal("prometheus did not become ready")
	}
	return url
}

// waitAlert waits until Prometheus reports alertname firing for run.
func waitAlert(t *testing.T, promURL, alertname, runID string, d time.Duration) map[string]any {
	var found map[string]any
	ok := waitFor(d, func() bool {
		r, err := http.Get(promURL + "/api/v1/alerts")
		if err != nil {
			return false
		}
		defer r.Body.Close()
		var body struct {
			Data struct {
				Alerts []map[string]any `json:"alerts"`
			} `json:"data"`
		}
		json.NewDecoder(r.Body).Decode(&body)
		for _, a := range body.Data.Alerts {
			labels, _ := a["labels"].(map[string]any)
			if labels["alertname"] == alertname && labels["run_id"] == runID && a["state"] == "firing" {
				found = a
				return true
			}
		}
		return false
	})
	if !ok {
		t.Fatalf("%s did not fire for run %s within %s", alertname, runID, d)
	}
	return found
}

func startMonitor(t *testing.T, env []string, sites ...string) string {
	cmd := startProcess(t, env, tetherBin, append([]string{"monitor", "-v", "--listen", "127.0.0.1:0"}, sites...)...)
	addr := logAddr(t, cmd, `monitor serving http://(127\.0\.0\.1:[0-9]+)/metrics`)
	waitHealthy(t, addr)
	return addr
}

// logAddr waits for the log of a process from startProcess to show the
// address it listens on: the first group of pattern.
func logAddr(t *testing.T, cmd *exec.Cmd, pattern string) string {
	t.Helper()
	re := regexp.MustCompile(pattern)
	var addr string
	if !waitFor(30*time.Second, func() bool {
		b, _ := os.ReadFile(cmd.Stderr.(*os.File).Name())
		if m := re.FindSubmatch(b); m != nil {
			addr = string(m[1])
		}
		return addr != ""
	}) {
		t.Fatalf("%s logged no address matching %s within 30s", filepath.Base(cmd.Path), pattern)
	}
	return addr
}

// waitHealthy waits for a monitor's /healthz to answer 200.
func waitHealthy(t *testing.T, addr string) {
	t.Helper()
	if !waitFor(20*time.Second, func() bool {
		r, err := http.Get("http://" + addr + "/healthz")
		if err != nil {
			return false
		}
		r.Body.Close()
		return r.StatusCode == 200
	}) {
		t.Fatal("the monitor did not answer /healthz")
	}
}

// A real Prometheus scraping tether monitor sees TetherRunHung fire for a
// local Task that stopped heart-beating.
func TestPrometheusRunHung(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	env := tetherEnv("XDG_STATE_HOME="+filepath.Join(dir, "state"), "PATH="+filepath.Dir(tetherBin)+":"+os.Getenv("PATH"))
	os.WriteFile(filepath.Join(dir, "hang.toml"), []byte(`name = "hang"
heartbeat_timeout = "3s"
script = '''
tether report --heartbeat
sleep 120
'''
[resources]
walltime = "5m"
`), 0o644)
	mon := startMonitor(t, env)
	prom := startPrometheus(t, mon)
	cmd := exec.Command(tetherBin, "submit", "hang.toml")
	cmd.Dir, cmd.Env = dir, env
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	var o map[string]any
	json.Unmarshal([]byte(lastLine(out)), &o)
	runID := o["run_id"].(string)
	defer cancelAndWait(t, env, dir, runID)
	a := waitAlert(t, prom, "TetherRunHung", runID, 60*time.Second)
	t.Logf("firing: %v", a["annotations"])
	// tether status shows the same reason
	st := exec.Command(tetherBin, "status", runID)
	st.Env = env
	sout, _ := st.Output()
	if !strings.Contains(string(sout), `"stuck":"no heartbeat or progress for`) {
		t.Errorf("tether status does not show the stuck reason: %s", sout)
	}
}

func lastLine(out []byte) string {
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	return lines[len(lines)-1]
}

// On the real Slurm cluster, a held job makes TetherRunPendingTooLong fire.
func TestPrometheusPendingTooLongSlurm(t *testing.T) {
	t.Parallel()
	c := needClusters(t)[0]
	c.holdShared(t)
	base, err := os.ReadFile(c.site["sbatch"])
	if err != nil {
		t.Fatal(err)
	}
	site := strings.Replace(string(base), "[poll]\n", "[poll]\npending_alert_after = \"5s\"\n", 1)
	site = strings.Replace(site, `name = "`, `name = "pending-`, 1)
	dir := workDir(t, c, map[string]string{
		"site.toml": site,
		"held.toml": "name='held'\ncommand=['true']\n[resources]\nwalltime='1m'\n[scheduler]\nextra_args=['--hold']\n",
	})
	bin := sharedTether(t, c.get("TESTCLUSTER_SHARED_DIR"))
	env := tetherEnv("TETHER_STATE_DIR="+filepath.Join(dir, "state"), "PATH="+filepath.Dir(bin)+":"+os.Getenv("PATH"))
	o, code, stderr := runCLI(t, bin, dir, filepath.Join(dir, "site.toml"), "submit", "held.toml")
	if code != 0 {
		t.Fatalf("submit: %d %s", code, stderr)
	}
	runID := o["run_id"].(string)
	defer runCLI(t, bin, dir, filepath.Join(dir, "site.toml"), "cancel", runID)
	mon := startMonitor(t, env, filepath.Join(dir, "site.toml"))
	prom := startPrometheus(t, mon)
	a := waitAlert(t, prom, "TetherRunPendingTooLong", runID, 90*time.Second)
	t.Logf("firing: %v", a["annotations"])
	o, _, _ = runCLI(t, bin, dir, filepath.Join(dir, "site.toml"), "status", runID)
	if s, _ := o["stuck"].(string); !strings.Contains(s, "JobHeldUser") {
		t.Errorf("tether status does not show the pending reason: %v", o)
	}
}

// systemd stops the monitor with SIGTERM: it stops serving and exits 0.
func TestMonitorStopsOnSIGTERM(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	env := tetherEnv("XDG_STATE_HOME=" + filepath.Join(dir, "state"))
	cmd := exec.Command(tetherBin, "monitor", "--listen", "127.0.0.1:0")
	cmd.Env = env
	var out syncBuffer // read below while the monitor may still write it
	cmd.Stderr = &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	serving := regexp.MustCompile(`monitor serving http://(127\.0\.0\.1:[0-9]+)/metrics`)
	var addr string
	if !waitFor(20*time.Second, func() bool {
		if m := serving.FindStringSubmatch(out.String()); m != nil {
			addr = m[1]
		}
		return addr != ""
	}) {
		t.Fatalf("the monitor logged no address within 20s\n%s", out.String())
	}
	waitHealthy(t, addr)
	cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("monitor exited with %v after SIGTERM\n%s", err, out.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("monitor still running 10 s after SIGTERM\n%s", out.String())
	}
	if !strings.Contains(out.String(), "monitor stopped") {
		t.Errorf("no clean stop in the log:\n%s", out.String())
	}
	if _, err := http.Get("http://" + addr + "/healthz"); err == nil {
		t.Error("still serving after SIGTERM")
	}
}
