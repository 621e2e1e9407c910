package monitor_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http/httptest"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/tether-hpc/tether/backends"
	"github.com/tether-hpc/tether/monitor"
	"github.com/tether-hpc/tether/rundir"
	"github.com/tether-hpc/tether/schema"
)

// needPromtool finds promtool; CI must have it (make test installs it).
func needPromtool(t *testing.T) string {
	p, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("promtool is not installed (apt install prometheus); CI must run the alert rule tests")
		}
		t.Skip("promtool is not installed (apt install prometheus)")
	}
	return p
}

// Every alert rule fires when it should and stays quiet when it should not.
func TestAlertRules(t *testing.T) {
	promtool := needPromtool(t)
	cmd := exec.Command(promtool, "test", "rules", "tether-rules.test.yml")
	cmd.Dir = "../deploy/prometheus"
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("promtool test rules: %v\n%s", err, out)
	}
	cmd = exec.Command(promtool, "check", "rules", "tether-rules.yml")
	cmd.Dir = "../deploy/prometheus"
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("promtool check rules: %v\n%s", err, out)
	}
}

// monitorWithRuns runs one monitor cycle over a fake site with runs in
// several states.
func monitorWithRuns(t *testing.T) (*monitor.Monitor, *env) {
	e := newEnv(t)
	eng := e.engine()
	ctx := context.Background()
	task := baseTask()
	task.HeartbeatTimeout = schema.Duration(time.Minute)
	for i := 0; i < 3; i++ {
		run := e.newRun(t, task)
		eng.Step(ctx, run, 0, monitor.NewTracker(run))
		f := 0.5
		rundir.AppendEvent(run.Status(), schema.Event{Type: schema.EventProgress, Fraction: &f, TS: e.now})
	}
	e.be.Put(backends.JobStatus{ID: "1", State: backends.Running, Start: e.now.Add(-time.Hour), Deadline: e.now.Add(time.Hour)})
	e.be.Put(backends.JobStatus{ID: "2", State: backends.Pending, Reason: "Priority", Submit: e.now.Add(-2 * time.Hour)})
	e.be.Set("3", backends.Completed, 0)
	m := monitor.NewMonitor([]*monitor.SiteRuntime{{Site: e.site, Store: e.store, Engine: eng}}, "test", e.Now, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if _, err := m.Cycle(ctx, m.Sites[0], 0); err != nil {
		t.Fatal(err)
	}
	return m, e
}

// The exposition passes promtool's lint, and the run and site families
// say what the runs are doing.
func TestMetricsExposition(t *testing.T) {
	m, _ := monitorWithRuns(t)
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if promtool, err := exec.LookPath("promtool"); err == nil || os.Getenv("CI") == "true" {
		cmd := exec.Command(promtool, "check", "metrics")
		cmd.Stdin = bytes.NewReader(body)
		if out, err := cmd.CombinedOutput(); err != nil || len(bytes.TrimSpace(out)) > 0 {
			t.Errorf("promtool check metrics: %v\n%s", err, out)
		}
	}
	want := `
# HELP tether_active_runs Active runs of a site by state.
# TYPE tether_active_runs gauge
tether_active_runs{site="s",state="completing"} 0
tether_active_runs{site="s",state="pending"} 1
tether_active_runs{site="s",state="running"} 1
tether_active_runs{site="s",state="suspended"} 0
tether_active_runs{site="s",state="unknown"} 0
# HELP tether_outcomes_total Runs that ended while the monitor watched them, by outcome.
# TYPE tether_outcomes_total counter
tether_outcomes_total{outcome="cancelled",site="s"} 0
tether_outcomes_total{outcome="failed",site="s"} 0
tether_outcomes_total{outcome="partial",site="s"} 0
tether_outcomes_total{outcome="skipped",site="s"} 0
tether_outcomes_total{outcome="succeeded",site="s"} 1
# HELP tether_run_stuck 1 when an active run looks stuck, by reason.
# TYPE tether_run_stuck gauge
tether_run_stuck{reason="pending_too_long",run_id="RUN2",site="s"} 1
`
	runs := m.Metrics.Runs()
	if len(runs) != 2 {
		t.Fatalf("active runs: %+v", runs)
	}
	want = strings.ReplaceAll(want, "RUN2", runs[1].RunID)
	if runs[1].State != "pending" {
		want = strings.ReplaceAll(want, runs[1].RunID, runs[0].RunID)
	}
	if err := testutil.GatherAndCompare(m.Metrics.Registry, strings.NewReader(want), "tether_active_runs", "tether_outcomes_total", "tether_run_stuck"); err != nil {
		t.Error(err)
	}
	for _, family := range []string{"tether_run_state", "tether_run_submit_timestamp_seconds", "tether_run_start_timestamp_seconds",
		"tether_run_deadline_timestamp_seconds", "tether_run_last_progress_timestamp_seconds", "tether_run_heartbeat_timeout_seconds",
		"tether_scheduler_query_duration_seconds", "tether_scheduler_queries_total", "tether_last_successful_poll_timestamp_seconds",
		"tether_build_info", "tether_site_pending_alert_after_seconds", "tether_site_scheduler_queries_total", "tether_site_scheduler_throttled"} {
		if !strings.Contains(string(body), "\n"+family) {
			t.Errorf("no %s in the scrape", family)
		}
	}
}

// Every expression of the dashboard uses metrics the monitor exports.
func TestDashboard(t *testing.T) {
	raw, err := os.ReadFile("../deploy/grafana/tether-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Title  string `json:"title"`
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("dashboard is not valid JSON: %v", err)
	}
	m, _ := monitorWithRuns(t)
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	scrape, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	name := regexp.MustCompile(`tether_[a-z_]+`)
	titles := map[string]bool{}
	for _, p := range dash.Panels {
		titles[p.Title] = true
		for _, tg := range p.Targets {
			for _, metric := range name.FindAllString(tg.Expr, -1) {
				metric = strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(metric, "_bucket"), "_sum"), "_count")
				if !strings.Contains(string(scrape), "# TYPE "+metric+" ") {
					t.Errorf("panel %q uses %s, which the monitor does not export", p.Title, metric)
				}
			}
		}
	}
	for _, want := range []string{"Runs by state", "Outcomes per hour", "Stuck runs", "Scheduler query latency"} {
		if !titles[want] {
			t.Errorf("no panel %q", want)
		}
	}
}

// /runs lists the active runs with their stuck reasons; /healthz answers.
func TestRunsAndHealth(t *testing.T) {
	m, _ := monitorWithRuns(t)
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	resp, _ := srv.Client().Get(srv.URL + "/runs")
	var runs []monitor.RunView
	json.NewDecoder(resp.Body).Decode(&runs)
	resp.Body.Close()
	stuck := ""
	for _, r := range runs {
		stuck += r.Stuck + ":" + r.StuckDetail
	}
	if len(runs) != 2 || !strings.Contains(stuck, "pending_too_long:pending for 2h0m0s: Priority") {
		t.Errorf("/runs: %+v", runs)
	}
	resp, _ = srv.Client().Get(srv.URL + "/healthz")
	if resp.StatusCode != 200 {
		t.Errorf("/healthz: %d", resp.StatusCode)
	}
	resp.Body.Close()
}
