// Package slurmrest submits and watches jobs through slurmrestd, with
// clients generated per REST API version (internal/v0038, v0040, v0041,
// v0042). api_version = "auto" picks the newest version both sides speak
// from the server's /openapi/v3 listing, cached in the state directory for
// a day. Generated types never leave this package: every version is
// translated into backends' normalized types.
package slurmrest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tether-hpc/tether/backends"
	"github.com/tether-hpc/tether/rundir"
)

// Supported lists the API versions this build has clients for, newest first.
var supported = []string{"v0.0.42", "v0.0.41", "v0.0.40", "v0.0.38"}

// Supported returns the API versions tether speaks, newest first.
func Supported() []string { return slices.Clone(supported) }

// api is one REST API version.
type api interface {
	submit(ctx context.Context, req backends.JobRequest, script string, env []string) (backends.JobID, error)
	query(ctx context.Context, ids []backends.JobID) (map[backends.JobID]backends.JobStatus, error)
	cancel(ctx context.Context, id backends.JobID) error
	ping(ctx context.Context) error
	// node reads one node's state list (base state and flags) and reason.
	node(ctx context.Context, name string) (states []string, reason string, err error)
	// jobs reads every job the controller knows, with its comment.
	jobs(ctx context.Context) ([]job, error)
	// partitions lists the partitions and their limits.
	partitions(ctx context.Context) ([]backends.Partition, error)
}

// Config configures the backend.
type Config struct {
	URL        string
	APIVersion string // "auto" or "v0.0.NN"
	User       string
	Token      TokenSource // nil over a unix socket with local auth
	// TokenEnv names an environment variable that must not be passed to jobs.
	TokenEnv string
	Timeout  time.Duration
	Retries  int
	// CacheDir keeps the negotiated version (the state directory).
	CacheDir string
	Log      *slog.Logger
	// NoLiveDetail: on v0.0.40+, poll with jobs/state only (no pending
	// reasons or expected starts; see detail.go).
	NoLiveDetail bool
}

// Backend is the slurmrestd backend.
type Backend struct {
	cfg Config
	t   *transport

	mu      sync.Mutex
	api     api
	version string
	// lostSubmitWait is the first pause before sending again a submit
	// that slurmctld did not take (then 2x, 3x).
	lostSubmitWait time.Duration
	// excludeOnce: the warning that v0.0.38 drops excluded nodes.
	excludeOnce sync.Once
	// noSlurmdbOnce: the warning that slurmrestd has no accounting plugin.
	noSlurmdbOnce sync.Once
}

// New returns a backend; the API version is negotiated on first use.
func New(cfg Config) (*Backend, error) {
	if cfg.Timeout <= 0 {
		cfg.Timeout = 30 * time.Second
	}
	if cfg.Retries == 0 {
		cfg.Retries = 4
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.APIVersion == "" {
		cfg.APIVersion = "auto"
	}
	if cfg.APIVersion != "auto" && !slices.Contains(supported, cfg.APIVersion) {
		return nil, fmt.Errorf("%w: slurmrest api_version %s is not one tether speaks (%s)", backends.ErrRejected, cfg.APIVersion, strings.Join(supported, ", "))
	}
	t, err := newTransport(cfg.URL, cfg.User, cfg.Token, cfg.Retries)
	if err != nil {
		return nil, err
	}
	return &Backend{cfg: cfg, t: t, lostSubmitWait: time.Second}, nil
}

// Requests is how many HTTP requests the backend has sent (retries included).
func (b *Backend) Requests() int64 { return b.t.requests.Load() }

// ReceivedBytes is how many bytes of answers the backend has read.
func (b *Backend) ReceivedBytes() int64 { return b.t.received.Load() }

// Version returns the API version in use, negotiating it if needed.
func (b *Backend) Version(ctx context.Context) (string, error) {
	if _, err := b.apiFor(ctx); err != nil {
		return "", err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.version, nil
}

func (b *Backend) apiFor(ctx context.Context) (api, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.api != nil {
		return b.api, nil
	}
	v := b.cfg.APIVersion
	if v == "auto" {
		var err error
		if v, err = b.negotiate(ctx); err != nil {
			return nil, err
		}
	}
	a, err := b.newAPI(v)
	if err != nil {
		return nil, err
	}
	b.api, b.version = a, v
	return a, nil
}

func (b *Backend) newAPI(v string) (api, error) {
	base, doer := b.t.base, b.t
	var a api
	var err error
	switch v {
	case "v0.0.38":
		return newV0038(base, doer, b.t)
	case "v0.0.40":
		a, err = newV0040(base, doer, b.t)
	case "v0.0.41":
		a, err = newV0041(base, doer, b.t)
	case "v0.0.42":
		a, err = newV0042(base, doer, b.t)
	default:
		return nil, fmt.Errorf("no client for API %s", v)
	}
	if a4, ok := a.(api4x); ok && err == nil && !b.cfg.NoLiveDetail {
		a4.detail = newLiveDetail()
		a = a4
	}
	return a, err
}

// versionCache is <state>/slurmrest/<hash of url>.json.
type versionCache struct {
	V       int       `json:"v"`
	URL     string    `json:"url"`
	Version string    `json:"version"`
	Offered []string  `json:"offered"`
	At      time.Time `json:"at"`
}

func (b *Backend) cachePath() string {
	if b.cfg.CacheDir == "" {
		return ""
	}
	h := sha256.Sum256([]byte(b.cfg.URL))
	return filepath.Join(b.cfg.CacheDir, "slurmrest", hex.EncodeToString(h[:8])+".json")
}

// negotiate picks the newest version both sides speak. The server's
// listing is cached for a day: the 24.11 spec is 660 KB.
func (b *Backend) negotiate(ctx context.Context) (string, error) {
	path := b.cachePath()
	var c versionCache
	if path != "" && rundir.ReadJSON(path, &c) == nil && c.V == 1 && c.URL == b.cfg.URL && time.Since(c.At) < 24*time.Hour && slices.Contains(supported, c.Version) {
		return c.Version, nil
	}
	offered, err := b.offered(ctx)
	if err != nil {
		return "", err
	}
	for _, v := range supported {
		if slices.Contains(offered, v) {
			b.cfg.Log.Info("slurmrestd API version chosen", "url", b.cfg.URL, "version", v, "offered", strings.Join(offered, ","))
			if path != "" {
				os.MkdirAll(filepath.Dir(path), 0o755)
				rundir.WriteJSON(path, versionCache{V: 1, URL: b.cfg.URL, Version: v, Offered: offered, At: time.Now().UTC()})
			}
			return v, nil
		}
	}
	return "", fmt.Errorf("%w: slurmrestd at %s offers %s; tether speaks %s", backends.ErrRejected, b.cfg.URL, strings.Join(offered, ", "), strings.Join(supported, ", "))
}

// offered reads the API versions from the server's /openapi/v3 listing.
func (b *Backend) offered(ctx context.Context) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, b.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, b.t.base+"/openapi/v3", nil)
	if err != nil {
		return nil, err
	}
	resp, err := b.t.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("%w: read /openapi/v3: %w", backends.ErrUnavailable, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, b.t.answerError("list API versions", resp.StatusCode, body, false)
	}
	return OfferedVersions(body)
}

// OfferedVersions lists the /slurm/v0.0.NN/ versions in an OpenAPI document.
func OfferedVersions(spec []byte) ([]string, error) {
	var doc struct {
		Paths map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(spec, &doc); err != nil {
		return nil, fmt.Errorf("%w: /openapi/v3 is not an OpenAPI document: %w", backends.ErrUnavailable, err)
	}
	set := map[string]bool{}
	for p := range doc.Paths {
		rest, ok := strings.CutPrefix(p, "/slurm/")
		if !ok {
			continue
		}
		v, _, _ := strings.Cut(rest, "/")
		if strings.HasPrefix(v, "v0.0.") {
			set[v] = true
		}
	}
	out := make([]string, 0, len(set))
	for v := range set {
		out = append(out, v)
	}
	sort.Strings(out)
	return out, nil
}

func (b *Backend) ctx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, b.cfg.Timeout)
}

// withAPI runs op with the negotiated API under the per-operation deadline.
// When slurmrestd no longer serves the version (upgraded while the choice
// was cached), it negotiates again and runs op once more.
func withAPI[T any](ctx context.Context, b *Backend, op func(context.Context, api) (T, error)) (T, error) {
	var zero T
	for try := 0; ; try++ {
		a, err := b.apiFor(ctx)
		if err != nil {
			return zero, err
		}
		cctx, cancel := b.ctx(ctx)
		v, err := op(cctx, a)
		cancel()
		if try == 0 && errors.Is(err, errAPIGone) && b.cfg.APIVersion == "auto" {
			b.forgetVersion(err)
			continue
		}
		return v, err
	}
}

// forgetVersion drops the negotiated version and its cache file.
func (b *Backend) forgetVersion(why error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.cfg.Log.Warn("slurmrestd no longer serves the negotiated API version; negotiating again", "version", b.version, "err", why)
	b.api, b.version = nil, ""
	if p := b.cachePath(); p != "" {
		os.Remove(p)
	}
}

// Submit sends the wrapper script and the job description. The submit is
// sent again only when the first one certainly created no job
// (certainlyNotSubmitted: no connection to slurmrestd, or slurmctld said
// it did not take it). When the answer was lost otherwise (a timeout, a
// reset, a proxy's 502/504, a send or receive failure inside Slurm),
// slurmctld may have created the job, or may still create it: Submit looks
// for it by its tag once and, when it is not there, returns ErrUnavailable
// without sending it again. The caller keeps the attempt and looks it up by
// its tag again later (launcher.Submitter.Recover) before any resubmit.
func (b *Backend) Submit(ctx context.Context, req backends.JobRequest) (backends.JobID, error) {
	script, err := os.ReadFile(req.Script)
	if err != nil {
		return "", fmt.Errorf("read the wrapper: %w", err)
	}
	jobEnv := jobEnviron(req.Env)
	send := func() (backends.JobID, error) {
		sent := false
		id, err := withAPI(ctx, b, func(ctx context.Context, a api) (backends.JobID, error) {
			r := req
			if len(r.Exclude) > 0 && !canExclude(a) {
				b.excludeOnce.Do(func() {
					b.cfg.Log.Warn("slurmrestd API v0.0.38 (Slurm 22.05) cannot exclude nodes: submitting without the exclusion (retry.exclude_failed_nodes); use API v0.0.40 or later, or the sbatch backend, to exclude them",
						"url", b.cfg.URL, "exclude", strings.Join(r.Exclude, ","), "tag", r.Tag)
				})
				r.Exclude = nil
			}
			sent = true
			id, err := a.submit(sendOnce(ctx), r, string(script), jobEnv)
			return id, unclassified(err)
		})
		if err != nil && !sent {
			// failed before the submit (API negotiation, credentials):
			// certainly not sent
			return "", fmt.Errorf("%w: %w", backends.ErrNotSent, err)
		}
		return id, err
	}
	for try := 1; ; try++ {
		id, err := send()
		if err == nil || !errors.Is(err, backends.ErrUnavailable) || errors.Is(err, backends.ErrSubmitLimit) {
			return id, err // a submit limit created no job: the submitter waits
		}
		if !certainlyNotSubmitted(err) {
			return b.lostSubmit(ctx, req, err)
		}
		// the transport has retried what never reached slurmrestd; here
		// slurmctld said it did not take the job
		if !ctldDidNotTake(err) || try > 3 {
			if errors.Is(err, backends.ErrNotSent) {
				return "", err
			}
			return "", fmt.Errorf("%w: %w", backends.ErrNotSent, err) // slurmctld did not take it
		}
		b.cfg.Log.Info("slurmctld did not take the submit; sending it again", "tag", req.Tag, "try", try, "err", err)
		t := time.NewTimer(time.Duration(try) * b.lostSubmitWait)
		select {
		case <-ctx.Done():
			t.Stop()
			return "", err
		case <-t.C:
		}
	}
}

// lostSubmit handles a submit whose fate is unknown: the job is looked for
// once in the controller by its tag, and never sent again from here.
func (b *Backend) lostSubmit(ctx context.Context, req backends.JobRequest, err error) (backends.JobID, error) {
	if req.Tag == "" {
		return "", err
	}
	found, ok, ferr := b.findInController(ctx, req.Tag)
	if ferr == nil && ok {
		b.cfg.Log.Warn("slurmrestd's answer to a submit was lost; found the job by its tag", "job", found, "tag", req.Tag)
		return found, nil
	}
	return "", fmt.Errorf("%w; the answer to the submit was lost and slurmctld may still create the job, so it was not sent again: "+
		"the attempt is looked up by its tag %s before any new submit", err, req.Tag)
}

// canExclude reports whether an API version can exclude nodes.
func canExclude(a api) bool {
	_, v38 := a.(v0038)
	return !v38
}

// FindByTag finds the job tether submitted with a tag: after a lost submit
// answer, and for an attempt whose submitter died. It looks in the
// controller by the job's comment (one job list), and when the controller
// no longer knows the job (purged MinJobAge after it ended) in accounting
// through slurmrestd's openapi/slurmdbd plugin (one /slurmdb/.../jobs
// request since the run was created), by the comment where slurmdbd keeps
// it (AccountingStoreFlags=job_comment) and otherwise by the working
// directory, the attempt's own. When slurmrestd does not load that plugin
// a purged job cannot be found (logged once). The newest match wins.
func (b *Backend) FindByTag(ctx context.Context, tag string) (backends.JobID, bool, error) {
	id, ok, err := b.findInController(ctx, tag)
	if err != nil || ok {
		return id, ok, err
	}
	return b.findInAccounting(ctx, tag)
}

func (b *Backend) findInController(ctx context.Context, tag string) (backends.JobID, bool, error) {
	jobs, err := withAPI(ctx, b, func(ctx context.Context, a api) ([]job, error) { return a.jobs(ctx) })
	if err != nil {
		return "", false, err
	}
	var best int64
	for _, j := range jobs {
		if j.Comment == tag && j.base() > best {
			best = j.base()
		}
	}
	if best == 0 {
		return "", false, nil
	}
	return backends.JobID(strconv.FormatInt(best, 10)), true, nil
}

// jobEnviron is the job's environment: what the site's policy let
// through of the submitter's (JobRequest.Env), never this process's own,
// and never a token. slurmrestd needs at least one variable: a job with
// none gets the system PATH.
func jobEnviron(env map[string]string) []string {
	out := slices.DeleteFunc(backends.EnvList(env), func(kv string) bool {
		return strings.HasPrefix(kv, "SLURM_JWT=") || strings.HasPrefix(kv, "TETHER_")
	})
	if len(out) == 0 {
		out = append(out, "PATH=/usr/local/bin:/usr/bin:/bin")
	}
	return out
}

// Query asks for every id in one request (v0.0.38: the job list; v0.0.40+:
// jobs/state, plus one job read per job that has ended, for its exit code).
func (b *Backend) Query(ctx context.Context, ids []backends.JobID) (map[backends.JobID]backends.JobStatus, error) {
	return withAPI(ctx, b, func(ctx context.Context, a api) (map[backends.JobID]backends.JobStatus, error) {
		return a.query(ctx, ids)
	})
}

// Cancel cancels a job; an unknown or finished job needs no cancel.
func (b *Backend) Cancel(ctx context.Context, id backends.JobID) error {
	_, err := withAPI(ctx, b, func(ctx context.Context, a api) (struct{}, error) { return struct{}{}, unclassified(a.cancel(ctx, id)) })
	return err
}

// unclassified wraps ErrUnavailable around an error that says nothing of
// what the scheduler did (an answer the generated client cannot decode,
// such as a 200 cut short by a proxy): an unknown error is transient, and
// a submit that ended so may have created its job.
func unclassified(err error) error {
	if err == nil || errors.Is(err, backends.ErrUnavailable) || errors.Is(err, backends.ErrRejected) ||
		errors.Is(err, backends.ErrAuth) || errors.Is(err, errAPIGone) {
		return err
	}
	var ae *answerErr
	if errors.As(err, &ae) {
		return err // a definite answer (an unknown job, access denied)
	}
	return fmt.Errorf("%w: %w", backends.ErrUnavailable, err)
}

// Ping checks connectivity and auth, and reports the API version.
func (b *Backend) Ping(ctx context.Context) (string, error) {
	if _, err := withAPI(ctx, b, func(ctx context.Context, a api) (struct{}, error) { return struct{}{}, a.ping(ctx) }); err != nil {
		return "", err
	}
	auth := "local auth (unix socket)"
	if b.cfg.Token != nil {
		auth = "JWT from " + b.cfg.Token.Describe()
	}
	v, _ := b.Version(ctx)
	msg := fmt.Sprintf("slurmrestd at %s answers, API %s, %s", b.cfg.URL, v, auth)
	if p := ProxyFor(b.cfg.URL, http.ProxyFromEnvironment); p != "" && b.cfg.Token != nil {
		msg += fmt.Sprintf("; note: the proxy %s from the environment (HTTPS_PROXY/HTTP_PROXY) carries every request, the JWT included: add the host to NO_PROXY to reach slurmrestd directly", p)
	}
	if ft, ok := b.cfg.Token.(*FileToken); ok {
		if fi, err := os.Stat(ft.Path); err == nil {
			if why := Exposed(fi.Mode()); why != "" {
				msg += fmt.Sprintf("; warning: the token file %s is readable by others (%s): chmod 600 it", ft.Path, why)
			}
		}
	}
	return msg, nil
}

// ProxyFor names the proxy (without credentials) that proxy picks for
// requests to rawURL, or "" for none (NO_PROXY is honoured; unix sockets
// never use one).
func ProxyFor(rawURL string, proxy func(*http.Request) (*url.URL, error)) string {
	if strings.HasPrefix(rawURL, "unix://") {
		return ""
	}
	req, err := http.NewRequest(http.MethodGet, rawURL, nil)
	if err != nil {
		return ""
	}
	u, err := proxy(req)
	if err != nil || u == nil {
		return ""
	}
	u.User = nil
	return u.String()
}

// Describe shows the REST request a submit would send (without the token).
func (b *Backend) Describe(req backends.JobRequest) string {
	return fmt.Sprintf("POST %s/slurm/<api_version>/job/submit (api_version %s) with the wrapper as the script", b.cfg.URL, b.cfg.APIVersion)
}

// DeliversWarnSignal: v0.0.40+ sends the warning to the batch script
// (kill_warning_flags BATCH_JOB); v0.0.38 rejects the "B:" form, so the
// wrapper's own timer warns instead.
func (b *Backend) DeliversWarnSignal(ctx context.Context) bool {
	v, err := b.Version(ctx)
	return err == nil && v != "v0.0.38"
}

// Partitions lists the partitions and their limits (one request).
func (b *Backend) Partitions(ctx context.Context) ([]backends.Partition, error) {
	a, err := b.apiFor(ctx)
	if err != nil {
		return nil, err
	}
	ctx, cancel := b.ctx(ctx)
	defer cancel()
	return a.partitions(ctx)
}

// DownNodes reads each of a failed job's nodes (a few requests, only after
// a node failure) and returns those that are down, drained or not
// responding, with Slurm's reason.
func (b *Backend) DownNodes(ctx context.Context, nodes []string) (map[string]string, error) {
	a, err := b.apiFor(ctx)
	if err != nil {
		return nil, err
	}
	ctx, cancel := b.ctx(ctx)
	defer cancel()
	out := map[string]string{}
	for _, n := range nodes {
		states, reason, err := a.node(ctx, n)
		if err != nil {
			return out, err
		}
		if nodeDown(states) {
			why := strings.ToLower(strings.Join(states, "+"))
			if reason != "" {
				why += ": " + reason
			}
			out[n] = why
		}
	}
	return out, nil
}

func nodeDown(states []string) bool {
	for _, s := range states {
		switch strings.ToUpper(strings.TrimSuffix(s, "*")) {
		case "DOWN", "DRAIN", "DRAINED", "DRAINING", "FAIL", "FAILING", "NOT_RESPONDING":
			return true
		}
		if strings.HasSuffix(s, "*") { // 22.05: "down*", "idle*": not responding
			return true
		}
	}
	return false
}

// SubmitArray submits one job array: the job description's array
// ("0-199%50") in ONE submit request, with Submit's handling of a lost
// answer (the array is found by its tag).
func (b *Backend) SubmitArray(ctx context.Context, req backends.JobRequest, spec backends.ArraySpec) (backends.JobID, error) {
	req.Array = &spec
	return b.Submit(ctx, req)
}

// ElementID is Slurm's "<array>_<index>".
func (b *Backend) ElementID(array backends.JobID, i int) backends.JobID {
	return backends.JobID(string(array) + "_" + strconv.Itoa(i))
}

// ArrayIndexVar: Slurm gives each element SLURM_ARRAY_TASK_ID.
func (b *Backend) ArrayIndexVar() string { return "SLURM_ARRAY_TASK_ID" }
