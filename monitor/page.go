package monitor

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io"
	"net/http"
	"os"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/tether-hpc/tether/internal/units"
	"github.com/tether-hpc/tether/rundir"
)

// The runs page: GET / (per site, the active and recently decided runs),
// GET /run/{id} (a run's detail, what tether show prints) and
// GET /run/{id}/log/{stdout|stderr} (the tail of a log). Server-rendered
// with html/template, which escapes everything a Task or a site wrote; the
// page refreshes its runs every few seconds with a small script that
// fetches the same page's fragment (a meta refresh without JavaScript).
// The monitor serves it with the same handler, so the same web config
// (TLS, basic auth) protects it as /metrics.

//go:embed page
var pageFS embed.FS

var pageTmpl = template.Must(template.New("").Funcs(template.FuncMap{
	"pct": func(f *float64) string {
		if f == nil {
			return ""
		}
		return strconv.FormatFloat(*f*100, 'f', 0, 64) + "%"
	},
	"frac": func(f *float64) string {
		if f == nil {
			return "0"
		}
		return strconv.FormatFloat(*f, 'f', 3, 64)
	},
	"ago":   ago,
	"agots": func(now time.Time, sec float64) string { return agoTS(now, sec) },
	"stamp": func(t time.Time) string {
		if t.IsZero() {
			return "-"
		}
		return t.UTC().Format("2006-01-02 15:04:05Z")
	},
	"stampp": func(t *time.Time) string {
		if t == nil {
			return "-"
		}
		return t.UTC().Format("2006-01-02 15:04:05Z")
	},
	"exit": func(c *int) string {
		if c == nil {
			return "-"
		}
		return strconv.Itoa(*c)
	},
}).ParseFS(pageFS, "page/*.html"))

// recentDecided is how many decided runs per site the page lists.
const recentDecided = 50

// pageRefresh is how often the page fetches its runs again.
const pageRefresh = 5 * time.Second

type pageSite struct {
	Name, Backend, PollError string
	Active                   []pageRun
	Decided                  []rundir.Row
}

type pageRun struct {
	RunView
	Message string
}

type pageData struct {
	Now       time.Time
	Sites     []pageSite
	RefreshMS int64
}

// decidedCache keeps each site's recently decided runs for a few seconds:
// a page load reads the listing cache at most once per refresh interval.
type decidedCache struct {
	mu   sync.Mutex
	at   map[string]time.Time
	rows map[string][]rundir.Row
}

func (c *decidedCache) get(site string, store *rundir.Store, now time.Time) []rundir.Row {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.at == nil {
		c.at, c.rows = map[string]time.Time{}, map[string][]rundir.Row{}
	}
	if t, ok := c.at[site]; ok && now.Sub(t) < pageRefresh {
		return c.rows[site]
	}
	rows, err := store.Rows()
	if err != nil {
		return c.rows[site]
	}
	var out []rundir.Row
	for _, r := range rows {
		if r.Outcome != "" && !r.Element && (r.Site == "" || r.Site == site) {
			out = append(out, r)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Decided.After(out[j].Decided) })
	if len(out) > recentDecided {
		out = out[:recentDecided]
	}
	c.at[site], c.rows[site] = now, out
	return out
}

func (m *Monitor) pageData() pageData {
	now := m.Now()
	d := pageData{Now: now, RefreshMS: pageRefresh.Milliseconds()}
	views := m.Metrics.Runs()
	sites := map[string]SiteView{}
	for _, v := range m.Metrics.Sites() {
		sites[v.Name] = v
	}
	for _, s := range m.Sites {
		ps := pageSite{Name: s.Site.Name, Backend: s.Site.Backend, PollError: sites[s.Site.Name].PollError}
		for _, v := range views {
			if v.Site == s.Site.Name {
				ps.Active = append(ps.Active, pageRun{RunView: v, Message: m.messageOf(s.Site.Name, v.RunID)})
			}
		}
		ps.Decided = m.decided.get(s.Site.Name, s.Store, now)
		d.Sites = append(d.Sites, ps)
	}
	return d
}

// messageOf is the latest progress message of a run the monitor tracks.
func (m *Monitor) messageOf(site, runID string) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	if tr := m.trackers[key(site, runID)]; tr != nil {
		tr.mu.Lock()
		defer tr.mu.Unlock()
		return tr.Summary().Message
	}
	return ""
}

func (m *Monitor) servePage(w http.ResponseWriter, r *http.Request) {
	name := "runs.html"
	if r.URL.Query().Get("fragment") == "1" {
		name = "runs-fragment"
	}
	render(w, name, m.pageData())
}

// findRun is a run of one of the monitor's sites (?site= picks the site).
func (m *Monitor) findRun(r *http.Request) (*SiteRuntime, rundir.Run, error) {
	id := r.PathValue("id")
	if !rundir.ValidRunID(id) {
		return nil, rundir.Run{}, fmt.Errorf("%q is not a run id", id)
	}
	want := r.URL.Query().Get("site")
	for _, s := range m.Sites {
		if want != "" && s.Site.Name != want {
			continue
		}
		run := s.Store.Run(id)
		if _, err := os.Stat(run.RunJSON()); err == nil {
			return s, run, nil
		}
	}
	return nil, rundir.Run{}, fmt.Errorf("%w: %s", rundir.ErrNoRun, id)
}

type detailData struct {
	Now       time.Time
	D         *Detail
	SiteParam string
}

func (m *Monitor) serveDetail(w http.ResponseWriter, r *http.Request) {
	s, run, err := m.findRun(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	}
	// through the poll cache only: the monitor's own cycle keeps it fresh
	d, err := s.Engine.Detail(r.Context(), run, 24*time.Hour)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	render(w, "run.html", detailData{Now: m.Now(), D: d, SiteParam: s.Site.Name})
}

// logTail is how much of a log the page shows (its end).
const logTail = 64 << 10

func (m *Monitor) serveLog(w http.ResponseWriter, r *http.Request) {
	_, run, err := m.findRun(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	}
	rec, err := run.Load()
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	n := len(rec.Attempts)
	if a := r.URL.Query().Get("attempt"); a != "" {
		if n, err = strconv.Atoi(a); err != nil || n < 1 || n > len(rec.Attempts) {
			http.Error(w, "no such attempt", http.StatusNotFound)
			return
		}
	}
	if n == 0 {
		http.Error(w, "the run has no attempt yet", http.StatusNotFound)
		return
	}
	var path string
	switch r.PathValue("stream") {
	case "stdout":
		path = run.Stdout(n)
	case "stderr":
		path = run.Stderr(n)
	default:
		http.Error(w, "stdout or stderr", http.StatusNotFound)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return // nothing written yet
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Size() > logTail {
		f.Seek(fi.Size()-logTail, io.SeekStart)
		fmt.Fprintf(w, "[… the first %d bytes left out; tether logs %s prints all of it]\n", fi.Size()-logTail, run.ID)
	}
	io.Copy(w, f)
}

func serveScript(w http.ResponseWriter, _ *http.Request) {
	b, _ := pageFS.ReadFile("page/refresh.js")
	w.Header().Set("Content-Type", "text/javascript; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Write(b)
}

func render(w http.ResponseWriter, name string, data any) {
	var buf bytes.Buffer
	if err := pageTmpl.ExecuteTemplate(&buf, name, data); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	// no inline script runs, whatever got into the page
	w.Header().Set("Content-Security-Policy", "default-src 'self'; script-src 'self'; style-src 'unsafe-inline'")
	w.Write(buf.Bytes())
}

func ago(now, t time.Time) string {
	s, _ := units.Ago(t, now)
	return s
}

func agoTS(now time.Time, sec float64) string {
	if sec == 0 {
		return "-"
	}
	return ago(now, time.Unix(0, int64(sec*1e9)))
}
