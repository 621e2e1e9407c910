package monitor

import (
	"github.com/tether-hpc/tether/health"
	"github.com/tether-hpc/tether/schema"
	"runtime"
	"sort"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Metrics is the monitor's private registry. Run-level series exist only
// for active runs (the one unbounded label is their run id) and vanish
// with the run; everything else is per site.
type Metrics struct {
	Registry *prometheus.Registry

	outcomes *prometheus.CounterVec
	lost     *prometheus.CounterVec
	// usage counters of decided runs, by site and Airflow DAG
	cpuSeconds, gpuSeconds, nodeSeconds, elapsed *prometheus.CounterVec
	queries                                      *prometheus.CounterVec
	queryErrs                                    *prometheus.CounterVec
	queryDur                                     *prometheus.HistogramVec
	cycleDur                                     *prometheus.HistogramVec
	// tracked and unreadable are set by each cycle.
	tracked    *prometheus.GaugeVec
	unreadable *prometheus.GaugeVec

	mu    sync.Mutex
	views map[string]map[string]RunView // site -> run id -> view
	sites map[string]SiteView
}

// RunView is what the metrics say about one active run.
type RunView struct {
	Site             string   `json:"site"`
	RunID            string   `json:"run_id"`
	JobID            string   `json:"job_id"`
	Name             string   `json:"name"`
	State            string   `json:"state"` // pending|running|completing|suspended|unknown
	SchedulerState   string   `json:"scheduler_state"`
	Submit           float64  `json:"submit_timestamp"`
	Start            float64  `json:"start_timestamp,omitempty"`
	Deadline         float64  `json:"deadline_timestamp,omitempty"`
	LastProgress     float64  `json:"last_progress_timestamp,omitempty"`
	Fraction         *float64 `json:"fraction"`
	HeartbeatTimeout float64  `json:"heartbeat_timeout_seconds,omitempty"`
	ExpectedStart    float64  `json:"expected_start_timestamp,omitempty"`
	PendingReason    string   `json:"pending_reason,omitempty"`
	Stuck            string   `json:"stuck,omitempty"`
	StuckDetail      string   `json:"stuck_detail,omitempty"`
	Attempts         int      `json:"attempts"`
	RunDir           string   `json:"run_dir"`
}

// SiteView is what the metrics say about one site.
type SiteView struct {
	Name              string  `json:"name"`
	Backend           string  `json:"backend"`
	LastPollSuccess   float64 `json:"last_successful_poll_timestamp"`
	PendingAlertAfter float64 `json:"pending_alert_after_seconds"`
	LastCycle         float64 `json:"last_cycle_timestamp"`
	PollError         string  `json:"poll_error,omitempty"`
	// QueriesAll counts the site's batched queries by every tether
	// process sharing its state directory (the poll cache's counter).
	QueriesAll float64 `json:"queries_all_processes"`
	// Throttled: the scheduler is rate-limiting the site's queries.
	Throttled bool `json:"throttled,omitempty"`
	// BadNodes are the nodes on the site's bad-node list.
	BadNodes []health.Node `json:"bad_nodes,omitempty"`
}

// RunStates are the one-hot states of tether_run_state.
var RunStates = []string{"pending", "running", "completing", "suspended", "unknown"}

// NewMetrics builds the registry with build info.
func NewMetrics(version string) *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		outcomes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tether_outcomes_total",
			Help: "Runs that ended while the monitor watched them, by outcome."}, []string{"site", "outcome"}),
		lost: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tether_runs_lost_total",
			Help: "Runs failed as lost: gone from the scheduler with no exit file after the grace window."}, []string{"site"}),
		cpuSeconds: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tether_usage_cpu_seconds_total",
			Help: "CPU-seconds allocated to the attempts of runs that ended while the monitor watched them (allocated CPUs × elapsed), by site and Airflow DAG (from the key; empty without one)."}, []string{"site", "dag"}),
		gpuSeconds: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tether_usage_gpu_seconds_total",
			Help: "GPU-seconds allocated to the attempts of runs that ended, by site and Airflow DAG."}, []string{"site", "dag"}),
		nodeSeconds: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tether_usage_node_seconds_total",
			Help: "Node-seconds (nodes × elapsed) of the attempts of runs that ended, by site and Airflow DAG."}, []string{"site", "dag"}),
		elapsed: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tether_usage_elapsed_seconds_total",
			Help: "Wall seconds of the attempts of runs that ended, by site and Airflow DAG."}, []string{"site", "dag"}),
		queries: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tether_scheduler_queries_total",
			Help: "Scheduler calls the monitor made, by kind: status (one batched query for the site), submit, find (a job looked up by its tag), cancel, nodes (down-node lookups after a node failure), usage (a decided attempt's accounting)."}, []string{"site", "kind"}),
		queryErrs: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tether_scheduler_query_errors_total",
			Help: "Scheduler queries that failed."}, []string{"site"}),
		queryDur: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "tether_scheduler_query_duration_seconds",
			Help: "Duration of one batched scheduler query.", Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}}, []string{"site"}),
		cycleDur: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "tether_monitor_cycle_duration_seconds",
			Help: "Duration of one monitor cycle over a site's active runs.", Buckets: prometheus.ExponentialBuckets(0.001, 2.5, 12)}, []string{"site"}),
		tracked: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "tether_monitor_tracked_runs",
			Help: "Runs of the site the monitor keeps state for (its active runs; not other sites' runs sharing the state directory)."}, []string{"site"}),
		unreadable: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "tether_monitor_unreadable_runs",
			Help: "Entries of the active index whose run.json cannot be read (missing, damaged, unreadable): not watched until it can be read."}, []string{"site"}),
		views: map[string]map[string]RunView{},
		sites: map[string]SiteView{},
	}
	bi := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "tether_build_info", Help: "tether's version; always 1."}, []string{"version", "goversion"})
	bi.WithLabelValues(version, runtime.Version()).Set(1)
	m.Registry.MustRegister(m.outcomes, m.lost, m.cpuSeconds, m.gpuSeconds, m.nodeSeconds, m.elapsed, m.queries, m.queryErrs, m.queryDur, m.cycleDur, m.tracked, m.unreadable, bi, runCollector{m},
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), collectors.NewGoCollector())
	return m
}

// initSite makes a site's counters exist at zero, so rates and alerts
// work before the first event.
func (m *Metrics) initSite(site string) {
	for _, o := range []string{"succeeded", "partial", "failed", "cancelled", "skipped"} {
		m.outcomes.WithLabelValues(site, o)
	}
	m.lost.WithLabelValues(site)
	for _, c := range []*prometheus.CounterVec{m.cpuSeconds, m.gpuSeconds, m.nodeSeconds, m.elapsed} {
		c.WithLabelValues(site, "")
	}
	for _, kind := range []string{"status", "submit", "find", "cancel", "nodes", "usage"} {
		m.queries.WithLabelValues(site, kind)
	}
	m.queryErrs.WithLabelValues(site)
	m.tracked.WithLabelValues(site)
	m.unreadable.WithLabelValues(site)
}

// SetRuns replaces the views of a site's active runs.
func (m *Metrics) SetRuns(site string, views map[string]RunView) {
	m.mu.Lock()
	m.views[site] = views
	m.mu.Unlock()
}

// UpdateRun replaces one run's view (after a status-file change).
func (m *Metrics) UpdateRun(v RunView) {
	m.mu.Lock()
	if m.views[v.Site] == nil {
		m.views[v.Site] = map[string]RunView{}
	}
	m.views[v.Site][v.RunID] = v
	m.mu.Unlock()
}

// SetSite records a site's state.
func (m *Metrics) SetSite(v SiteView) {
	m.mu.Lock()
	m.sites[v.Name] = v
	m.mu.Unlock()
}

// Runs returns every active run's view, sorted by site and run id.
func (m *Metrics) Runs() []RunView {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []RunView
	for _, vs := range m.views {
		for _, v := range vs {
			out = append(out, v)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Site != out[j].Site {
			return out[i].Site < out[j].Site
		}
		return out[i].RunID < out[j].RunID
	})
	return out
}

// Sites returns the sites' views.
func (m *Metrics) Sites() []SiteView {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]SiteView, 0, len(m.sites))
	for _, v := range m.sites {
		out = append(out, v)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// runCollector turns the views into series at scrape time, so the series
// of a run that ended are simply not produced any more.
type runCollector struct{ m *Metrics }

var (
	runLabels      = []string{"site", "run_id"}
	descRunState   = prometheus.NewDesc("tether_run_state", "State of an active run (one-hot).", append(runLabels, "state"), nil)
	descSubmit     = prometheus.NewDesc("tether_run_submit_timestamp_seconds", "When the run's current attempt was submitted.", runLabels, nil)
	descStart      = prometheus.NewDesc("tether_run_start_timestamp_seconds", "When the run's current attempt started.", runLabels, nil)
	descDeadline   = prometheus.NewDesc("tether_run_deadline_timestamp_seconds", "When the scheduler will end the job (start + walltime).", runLabels, nil)
	descProgress   = prometheus.NewDesc("tether_run_last_progress_timestamp_seconds", "Last heartbeat, progress or checkpoint of the Task (or its start).", runLabels, nil)
	descFraction   = prometheus.NewDesc("tether_run_progress_ratio", "Fraction of the work the Task reports done (0..1).", runLabels, nil)
	descHeartbeat  = prometheus.NewDesc("tether_run_heartbeat_timeout_seconds", "The Task's heartbeat_timeout (0: off).", runLabels, nil)
	descExpected   = prometheus.NewDesc("tether_run_expected_start_timestamp_seconds", "When the scheduler expects a pending run's job to start (only while it gives an estimate).", runLabels, nil)
	descPendReason = prometheus.NewDesc("tether_run_pending_reason", "1 while a run's job is pending, labelled with the scheduler's pending reason.", append(runLabels, "reason"), nil)
	descStuck      = prometheus.NewDesc("tether_run_stuck", "1 when an active run looks stuck, by reason.", append(runLabels, "reason"), nil)
	descLastPoll   = prometheus.NewDesc("tether_last_successful_poll_timestamp_seconds", "When a scheduler query of the site last succeeded (any tether process).", []string{"site"}, nil)
	descPendingMax = prometheus.NewDesc("tether_site_pending_alert_after_seconds", "The site's pending_alert_after.", []string{"site"}, nil)
	descActive     = prometheus.NewDesc("tether_active_runs", "Active runs of a site by state.", []string{"site", "state"}, nil)
	descLastCycle  = prometheus.NewDesc("tether_monitor_last_cycle_timestamp_seconds", "When the monitor last finished a cycle over the site.", []string{"site"}, nil)
	descQueriesAll = prometheus.NewDesc("tether_site_scheduler_queries_total", "Batched scheduler queries of the site by every tether process sharing its state directory (run, wait, monitor).", []string{"site"}, nil)
	descBadNode    = prometheus.NewDesc("tether_site_bad_node_until_timestamp_seconds", "A node on the site's bad-node list (new submissions avoid it), with when it leaves the list.", []string{"site", "node"}, nil)
	descThrottled  = prometheus.NewDesc("tether_site_scheduler_throttled", "1 while the scheduler rate-limits the site's queries (rl_enable, HTTP 429).", []string{"site"}, nil)
)

func (runCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descRunState, descSubmit, descStart, descDeadline, descProgress, descFraction, descExpected, descPendReason,
		descHeartbeat, descStuck, descLastPoll, descPendingMax, descActive, descLastCycle, descQueriesAll, descThrottled, descBadNode} {
		ch <- d
	}
}

func (c runCollector) Collect(ch chan<- prometheus.Metric) {
	m := c.m
	m.mu.Lock()
	defer m.mu.Unlock()
	g := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	for site, sv := range m.sites {
		if sv.LastPollSuccess > 0 {
			g(descLastPoll, sv.LastPollSuccess, site)
		}
		g(descPendingMax, sv.PendingAlertAfter, site)
		ch <- prometheus.MustNewConstMetric(descQueriesAll, prometheus.CounterValue, sv.QueriesAll, site)
		throttled := 0.0
		if sv.Throttled {
			throttled = 1
		}
		g(descThrottled, throttled, site)
		for _, n := range sv.BadNodes {
			g(descBadNode, float64(n.Until.UnixNano())/1e9, site, n.Name)
		}
		if sv.LastCycle > 0 {
			g(descLastCycle, sv.LastCycle, site)
		}
		counts := map[string]int{}
		for _, v := range m.views[site] {
			counts[v.State]++
		}
		for _, s := range RunStates {
			g(descActive, float64(counts[s]), site, s)
		}
	}
	for _, views := range m.views {
		for _, v := range views {
			for _, s := range RunStates {
				one := 0.0
				if s == v.State {
					one = 1
				}
				g(descRunState, one, v.Site, v.RunID, s)
			}
			if v.Submit > 0 {
				g(descSubmit, v.Submit, v.Site, v.RunID)
			}
			if v.Start > 0 {
				g(descStart, v.Start, v.Site, v.RunID)
			}
			if v.Deadline > 0 {
				g(descDeadline, v.Deadline, v.Site, v.RunID)
			}
			if v.ExpectedStart > 0 {
				g(descExpected, v.ExpectedStart, v.Site, v.RunID)
			}
			if v.PendingReason != "" {
				g(descPendReason, 1, v.Site, v.RunID, v.PendingReason)
			}
			if v.LastProgress > 0 {
				g(descProgress, v.LastProgress, v.Site, v.RunID)
			}
			if v.Fraction != nil {
				g(descFraction, *v.Fraction, v.Site, v.RunID)
			}
			g(descHeartbeat, v.HeartbeatTimeout, v.Site, v.RunID)
			if v.Stuck != "" {
				g(descStuck, 1, v.Site, v.RunID, v.Stuck)
			}
		}
	}
}

// countUsage adds a decided run's usage to the site's (and its DAG's)
// counters.
func (m *Metrics) countUsage(site string, o *schema.Outcome) {
	if o.Usage == nil {
		return
	}
	dag := dagOf(o.Key)
	m.cpuSeconds.WithLabelValues(site, dag).Add(o.Usage.CPUS)
	m.gpuSeconds.WithLabelValues(site, dag).Add(o.Usage.GPUS)
	m.elapsed.WithLabelValues(site, dag).Add(o.Usage.ElapsedS)
	m.nodeSeconds.WithLabelValues(site, dag).Add(o.Usage.NodeS)
}
