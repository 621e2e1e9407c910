package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/exporter-toolkit/web"
	"github.com/tether-hpc/tether/monitor"
	"golang.org/x/crypto/bcrypt"
)

// pollUntil polls cond until it holds or ctx ends; it returns the last
// reason cond gave for not holding.
func pollUntil(ctx context.Context, cond func(context.Context) (bool, string)) (bool, string) {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	why := "not tried"
	for {
		var ok bool
		if ok, why = cond(ctx); ok {
			return true, ""
		}
		select {
		case <-ctx.Done():
			return false, why
		case <-tick.C:
		}
	}
}

// get fetches url with client, optionally with basic auth credentials.
func get(ctx context.Context, client *http.Client, url, user, pass string) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, "", err
	}
	if user != "" {
		req.SetBasicAuth(user, pass)
	}
	r, err := client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer r.Body.Close()
	b, err := io.ReadAll(r.Body)
	return r.StatusCode, string(b), err
}

func bcryptHash(t *testing.T, password string) string {
	h, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	return string(h)
}

// selfSigned writes a self-signed certificate for 127.0.0.1 and localhost
// (and its key) into dir and returns a pool that trusts it.
func selfSigned(t *testing.T, dir string) (certFile, keyFile string, pool *x509.CertPool) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "tether monitor test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		DNSNames:              []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "server.crt"), filepath.Join(dir, "server.key")
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	if err := os.WriteFile(certFile, certPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	pool = x509.NewCertPool()
	pool.AppendCertsFromPEM(certPEM)
	return certFile, keyFile, pool
}

// startWebMonitor starts tether monitor with a web config file and waits
// until /healthz answers 200 to an authenticated request.
func startWebMonitor(t *testing.T, env []string, webConfig, scheme string, client *http.Client, user, pass string) string {
	t.Helper()
	cmd := startProcess(t, env, tetherBin, "monitor", "-v", "--listen", "127.0.0.1:0", "--web.config.file", webConfig)
	addr := logAddr(t, cmd, `monitor serving http://(127\.0\.0\.1:[0-9]+)/metrics`)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if ok, why := pollUntil(ctx, func(ctx context.Context) (bool, string) {
		code, _, err := get(ctx, client, scheme+"://"+addr+"/healthz", user, pass)
		if err != nil {
			return false, err.Error()
		}
		return code == http.StatusOK, fmt.Sprintf("status %d", code)
	}); !ok {
		t.Fatalf("the monitor did not answer /healthz: %s", why)
	}
	return addr
}

// startPrometheusWith starts the real Prometheus scraping every second
// with the given scrape_configs entries (YAML list items, indented by 2).
func startPrometheusWith(t *testing.T, scrapeConfigs string) string {
	t.Helper()
	bin := needPrometheus(t)
	dir := t.TempDir()
	cfg := "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n" + scrapeConfigs
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := startProcess(t, tetherEnv(), bin, "--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "data"), "--web.listen-address=127.0.0.1:0")
	promURL := "http://" + logAddr(t, cmd, `msg="Listening on" address=(127\.0\.0\.1:[0-9]+)`)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if ok, why := pollUntil(ctx, func(ctx context.Context) (bool, string) {
		code, _, err := get(ctx, http.DefaultClient, promURL+"/-/ready", "", "")
		if err != nil {
			return false, err.Error()
		}
		return code == http.StatusOK, fmt.Sprintf("status %d", code)
	}); !ok {
		t.Fatalf("prometheus did not become ready: %s\n%s", why, cfg)
	}
	return promURL
}

type promTarget struct {
	Labels    map[string]string `json:"labels"`
	Health    string            `json:"health"`
	LastError string            `json:"lastError"`
	ScrapeURL string            `json:"scrapeUrl"`
}

// promTargetOf returns Prometheus's view of the target of job.
func promTargetOf(ctx context.Context, promURL, job string) (promTarget, error) {
	_, body, err := get(ctx, http.DefaultClient, promURL+"/api/v1/targets", "", "")
	if err != nil {
		return promTarget{}, err
	}
	var resp struct {
		Data struct {
			ActiveTargets []promTarget `json:"activeTargets"`
		} `json:"data"`
	}
	if err := json.Unmarshal([]byte(body), &resp); err != nil {
		return promTarget{}, fmt.Errorf("targets: %v: %s", err, body)
	}
	for _, tg := range resp.Data.ActiveTargets {
		if tg.Labels["job"] == job {
			return tg, nil
		}
	}
	return promTarget{}, fmt.Errorf("no target of job %s in %s", job, body)
}

// promSeries returns how many series a PromQL instant query finds.
func promSeries(ctx context.Context, promURL, query string) (int, error) {
	_, body, err := get(ctx, http.DefaultClient, promURL+"/api/v1/query?query="+url.QueryEscape(query), "", "")
	if err != nil {
		return 0, err
	}
	var resp struct {
		Data struct {
			Result []json.RawMessage `json:"result"`
		} `json:"data"`
	}
	if err := json.Unmarshal([]byte(body), &resp); err != nil {
		return 0, fmt.Errorf("query: %v: %s", err, body)
	}
	return len(resp.Data.Result), nil
}

// waitScraped waits until Prometheus has the target of job up and holds
// tether_build_info from it.
func waitScraped(t *testing.T, promURL, job string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if ok, why := pollUntil(ctx, func(ctx context.Context) (bool, string) {
		tg, err := promTargetOf(ctx, promURL, job)
		if err != nil {
			return false, err.Error()
		}
		if tg.Health != "up" {
			return false, fmt.Sprintf("target %s is %q: %s", tg.ScrapeURL, tg.Health, tg.LastError)
		}
		n, err := promSeries(ctx, promURL, fmt.Sprintf(`tether_build_info{job=%q}`, job))
		if err != nil {
			return false, err.Error()
		}
		return n > 0, "no tether_build_info series yet"
	}); !ok {
		t.Fatalf("prometheus did not scrape job %s: %s", job, why)
	}
}

// tether monitor --web.config.file with basic_auth_users: the real
// Prometheus scrapes it with the right credentials (basic_auth in its
// scrape config), a scrape without them is refused, and every path
// answers 401 without credentials or with a wrong password.
func TestMonitorWebConfigBasicAuth(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	env := append(os.Environ(), "XDG_STATE_HOME="+filepath.Join(dir, "state"))
	const user, pass = "prometheus", "correct horse battery staple"
	webConfig := filepath.Join(dir, "web-config.yml")
	if err := os.WriteFile(webConfig, []byte(fmt.Sprintf("basic_auth_users:\n  %s: %q\n", user, bcryptHash(t, pass))), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := startWebMonitor(t, env, webConfig, "http", http.DefaultClient, user, pass)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, path := range []string{"/metrics", "/healthz", "/runs", "/", "/run/x-1", "/run/x-1/log/stdout", "/static/refresh.js"} {
		for _, cred := range []struct{ user, pass string }{{"", ""}, {user, "wrong"}, {"nobody", pass}} {
			code, _, err := get(ctx, http.DefaultClient, "http://"+addr+path, cred.user, cred.pass)
			if err != nil {
				t.Fatal(err)
			}
			if code != http.StatusUnauthorized {
				t.Errorf("GET %s as %q/%q: status %d, want 401", path, cred.user, cred.pass, code)
			}
		}
	}
	code, body, err := get(ctx, http.DefaultClient, "http://"+addr+"/metrics", user, pass)
	if err != nil {
		t.Fatal(err)
	}
	if code != http.StatusOK || !strings.Contains(body, "tether_build_info") {
		t.Fatalf("GET /metrics with the right credentials: status %d\n%s", code, tail(body, 500))
	}
	// the runs page is behind the same basic auth
	if code, body, err := get(ctx, http.DefaultClient, "http://"+addr+"/", user, pass); err != nil || code != http.StatusOK || !strings.Contains(body, "<h1>tether runs</h1>") {
		t.Fatalf("GET / with the right credentials: status %d (%v)\n%s", code, err, tail(body, 500))
	}

	prom := startPrometheusWith(t, fmt.Sprintf(`  - job_name: tether-monitor
    basic_auth:
      username: %q
      password: %q
    static_configs:
      - targets: [%q]
  - job_name: tether-monitor-nocreds
    static_configs:
      - targets: [%q]
`, user, pass, addr, addr))
	waitScraped(t, prom, "tether-monitor")
	// the same target without basic_auth is down with a 401
	wctx, wcancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer wcancel()
	if ok, why := pollUntil(wctx, func(ctx context.Context) (bool, string) {
		tg, err := promTargetOf(ctx, prom, "tether-monitor-nocreds")
		if err != nil {
			return false, err.Error()
		}
		return tg.Health == "down" && strings.Contains(tg.LastError, "401"), fmt.Sprintf("health %q, last error %q", tg.Health, tg.LastError)
	}); !ok {
		t.Errorf("a scrape without credentials was not refused with 401: %s", why)
	}
	if n, err := promSeries(wctx, prom, `tether_build_info{job="tether-monitor-nocreds"}`); err != nil || n != 0 {
		t.Errorf("a scrape without credentials stored %d series (%v)", n, err)
	}
}

// With tls_server_config (a self-signed certificate made here) and basic
// auth, the monitor serves HTTPS only: Go and the real Prometheus (ca_file)
// scrape it; plain HTTP and an untrusting client get nothing.
func TestMonitorWebConfigTLS(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	env := append(os.Environ(), "XDG_STATE_HOME="+filepath.Join(dir, "state"))
	certFile, _, pool := selfSigned(t, dir)
	const user, pass = "prometheus", "tls-and-a-password"
	// cert_file and key_file are relative to the web config file
	webConfig := filepath.Join(dir, "web-config.yml")
	cfg := fmt.Sprintf("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\nbasic_auth_users:\n  %s: %q\n", user, bcryptHash(t, pass))
	if err := os.WriteFile(webConfig, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: pool}
	client := &http.Client{Transport: tr}
	defer tr.CloseIdleConnections()
	addr := startWebMonitor(t, env, webConfig, "https", client, user, pass)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+addr+"/metrics", nil)
	req.SetBasicAuth(user, pass)
	r, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(r.Body)
	r.Body.Close()
	if r.StatusCode != http.StatusOK || r.TLS == nil || !strings.Contains(string(body), "tether_build_info") {
		t.Fatalf("HTTPS GET /metrics: status %d, TLS %v\n%s", r.StatusCode, r.TLS != nil, tail(string(body), 500))
	}
	if code, _, err := get(ctx, client, "https://"+addr+"/metrics", "", ""); err != nil || code != http.StatusUnauthorized {
		t.Errorf("HTTPS GET /metrics without credentials: status %d (%v), want 401", code, err)
	}
	// plain HTTP on the TLS port is not served
	if code, body, err := get(ctx, http.DefaultClient, "http://"+addr+"/metrics", user, pass); err == nil && (code == http.StatusOK || strings.Contains(body, "tether_build_info")) {
		t.Errorf("plain HTTP GET /metrics served: status %d", code)
	}
	// a client that does not trust the certificate does not connect
	if _, _, err := get(ctx, http.DefaultClient, "https://"+addr+"/metrics", user, pass); err == nil {
		t.Error("a client without the certificate connected")
	}

	prom := startPrometheusWith(t, fmt.Sprintf(`  - job_name: tether-monitor-tls
    scheme: https
    tls_config:
      ca_file: %q
    basic_auth:
      username: %q
      password: %q
    static_configs:
      - targets: [%q]
`, certFile, user, pass, addr))
	waitScraped(t, prom, "tether-monitor-tls")
}

// A web config file that cannot be used is a bad command line: exit 2
// with a message naming the file, before the monitor listens (the port is
// taken here, so a listen attempt would report that instead).
func TestMonitorBadWebConfig(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	env := append(os.Environ(), "XDG_STATE_HOME="+filepath.Join(dir, "state"))
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	for name, c := range map[string]struct{ content, want string }{
		"missing.yml":   {"", "no such file"},
		"typo.yml":      {"basic_auth_user:\n  prom: x\n", "basic_auth_user"},
		"plaintext.yml": {"basic_auth_users:\n  prom: secret\n", "bcrypt"},
		"nocert.yml":    {"tls_server_config:\n  cert_file: absent.crt\n  key_file: absent.key\n", "absent.crt"},
		"nokey.yml":     {"tls_server_config:\n  cert_file: absent.crt\n", "key"},
		"notyaml.yml":   {"basic_auth_users: [\n", "yaml"},
	} {
		path := filepath.Join(dir, name)
		if c.content != "" {
			if err := os.WriteFile(path, []byte(c.content), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		cmd := exec.CommandContext(ctx, tetherBin, "monitor", "--listen", busy.Addr().String(), "--web.config.file", path)
		cmd.Env = env
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		err := cmd.Run()
		cancel()
		code := -1
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		}
		msg := stderr.String()
		if code != ExitBadInput {
			t.Errorf("%s: exit %d (%v), want 2\n%s", name, code, err, msg)
		}
		if !strings.Contains(msg, path) || !strings.Contains(msg, c.want) {
			t.Errorf("%s: the error does not name the file and the problem (%q):\n%s", name, c.want, msg)
		}
		if strings.Contains(msg, "listen on") || strings.Contains(msg, "monitor serving") {
			t.Errorf("%s: the monitor tried to listen before checking the web config:\n%s", name, msg)
		}
	}
}

// /runs (and /metrics) never show a Task's env values, which run.json
// holds.
func TestMonitorRunsShowNoEnv(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	env := append(os.Environ(), "XDG_STATE_HOME="+filepath.Join(dir, "state"), "PATH="+filepath.Dir(tetherBin)+":"+os.Getenv("PATH"))
	secret := fmt.Sprintf("s3cret-%d-value", time.Now().UnixNano())
	os.WriteFile(filepath.Join(dir, "envtask.toml"), []byte(fmt.Sprintf(`name = "envtask"
script = '''
tether report --heartbeat
sleep 120
'''
[env]
DB_PASSWORD = %q
[resources]
walltime = "5m"
`, secret)), 0o644)
	cmd := exec.Command(tetherBin, "submit", "envtask.toml")
	cmd.Dir, cmd.Env = dir, env
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("submit: %v\n%s", err, out)
	}
	var o map[string]any
	json.Unmarshal([]byte(lastLine(out)), &o)
	runID, _ := o["run_id"].(string)
	if runID == "" {
		t.Fatalf("no run_id in %s", out)
	}
	defer cancelAndWait(t, env, dir, runID)
	addr := startMonitor(t, env)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var runs []map[string]any
	var body string
	if ok, why := pollUntil(ctx, func(ctx context.Context) (bool, string) {
		var code int
		var err error
		code, body, err = get(ctx, http.DefaultClient, "http://"+addr+"/runs", "", "")
		if err != nil {
			return false, err.Error()
		}
		runs = nil
		if err := json.Unmarshal([]byte(body), &runs); err != nil {
			return false, fmt.Sprintf("status %d: %v: %s", code, err, body)
		}
		for _, r := range runs {
			if r["run_id"] == runID {
				return true, ""
			}
		}
		return false, "run not listed yet: " + body
	}); !ok {
		t.Fatalf("/runs does not list %s: %s", runID, why)
	}
	if strings.Contains(body, secret) || strings.Contains(body, "DB_PASSWORD") {
		t.Errorf("/runs shows the Task's env:\n%s", body)
	}
	// the value is in the run's files, so /runs had it to hand
	var runDir string
	for _, r := range runs {
		if r["run_id"] == runID {
			runDir, _ = r["run_dir"].(string)
		}
	}
	if b, err := os.ReadFile(filepath.Join(runDir, "run.json")); err != nil || !strings.Contains(string(b), secret) {
		t.Errorf("run.json of %s (%v) does not hold the env value: the test does not test anything", runDir, err)
	}
	for _, path := range []string{"/metrics", "/healthz"} {
		_, b, err := get(ctx, http.DefaultClient, "http://"+addr+path, "", "")
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(b, secret) {
			t.Errorf("%s shows the Task's env value", path)
		}
	}
}

// RunView, what /runs serves, has no field that could carry a Task's env:
// only scalars, none named like an environment.
func TestRunViewHasNoEnv(t *testing.T) {
	rt := reflect.TypeFor[monitor.RunView]()
	for i := 0; i < rt.NumField(); i++ {
		f := rt.Field(i)
		k := f.Type.Kind()
		if k == reflect.Pointer {
			k = f.Type.Elem().Kind()
		}
		switch k {
		case reflect.Map, reflect.Slice, reflect.Array, reflect.Struct, reflect.Interface:
			t.Errorf("RunView.%s is a %s: /runs must show only scalars, never a Task's env", f.Name, f.Type)
		}
		if strings.Contains(strings.ToLower(f.Name+f.Tag.Get("json")), "env") {
			t.Errorf("RunView.%s (%s) looks like an environment", f.Name, f.Tag)
		}
	}
}

// The example web config in deploy/ is valid (with a certificate and key
// beside it), its hash is that of the password it documents, and the
// systemd unit shows the flag.
func TestDeployWebConfigExample(t *testing.T) {
	example := filepath.Join(repoRoot(), "deploy", "systemd", "web-config.yml")
	raw, err := os.ReadFile(example)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	crt, key, _ := selfSigned(t, dir)
	if err := os.Rename(crt, filepath.Join(dir, "tether-monitor.crt")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(key, filepath.Join(dir, "tether-monitor.key")); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "web-config.yml")
	if err := os.WriteFile(cfg, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := web.Validate(cfg); err != nil {
		t.Errorf("%s: %v", example, err)
	}
	var hash string
	for _, l := range strings.Split(string(raw), "\n") {
		if h, ok := strings.CutPrefix(strings.TrimSpace(l), "prometheus: "); ok {
			hash = h
		}
	}
	if err := bcrypt.CompareHashAndPassword([]byte(hash), []byte("change-me")); err != nil {
		t.Errorf("%s: the example hash %q is not that of \"change-me\": %v", example, hash, err)
	}
	unit, err := os.ReadFile(filepath.Join(repoRoot(), "deploy", "systemd", "tether-monitor.service"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(unit), "--web.config.file /etc/tether/web-config.yml") {
		t.Error("the systemd unit does not show --web.config.file")
	}
}

// The metrics server has read, write and idle timeouts.
func TestMetricsServerTimeouts(t *testing.T) {
	srv := newMetricsServer(http.NotFoundHandler())
	for name, d := range map[string]time.Duration{
		"ReadHeaderTimeout": srv.ReadHeaderTimeout, "ReadTimeout": srv.ReadTimeout,
		"WriteTimeout": srv.WriteTimeout, "IdleTimeout": srv.IdleTimeout,
	} {
		if d <= 0 {
			t.Errorf("%s is not set", name)
		}
	}
}
