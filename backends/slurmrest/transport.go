package slurmrest

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/go-retryablehttp"
	"github.com/tether-hpc/tether/backends"
	"github.com/tether-hpc/tether/backends/internal/slurm"
)

// transport sends requests to slurmrestd: it adds the auth headers, retries
// connection errors and transient 5xx answers with backoff and jitter, and
// counts requests.
type transport struct {
	base     string // "http://host:port", or "http://localhost" over a unix socket
	display  string // the URL as configured, for messages
	user     string
	token    TokenSource // nil: unix socket with local auth
	client   *retryablehttp.Client
	requests atomic.Int64
	// received counts response body bytes read (answers' sizes).
	received atomic.Int64
}

// maxBody bounds what is read from an error answer.
const maxBody = 1 << 20

func newTransport(url, user string, token TokenSource, retries int) (*transport, error) {
	t := &transport{display: url, user: user, token: token}
	base := &http.Transport{
		Proxy:               http.ProxyFromEnvironment,
		MaxIdleConnsPerHost: 8,
		IdleConnTimeout:     90 * time.Second,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
	}
	switch {
	case strings.HasPrefix(url, "unix://"):
		path := strings.TrimPrefix(url, "unix://")
		base.Proxy = nil
		base.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{Timeout: 5 * time.Second}).DialContext(ctx, "unix", path)
		}
		t.base = "http://localhost"
	case strings.HasPrefix(url, "http://"), strings.HasPrefix(url, "https://"):
		t.base = strings.TrimRight(url, "/")
	default:
		return nil, fmt.Errorf("slurmrest url %q: want http://, https:// or unix://", url)
	}
	rc := retryablehttp.NewClient()
	rc.HTTPClient = &http.Client{Transport: countingRT{base, &t.requests, &t.received},
		// never follow a redirect: the JWT goes to the configured URL only
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	rc.Logger = nil // URLs are harmless, but tether logs through slog only
	rc.RetryMax = retries
	rc.RetryWaitMin = 200 * time.Millisecond
	rc.RetryWaitMax = 3 * time.Second
	rc.CheckRetry = retryPolicy
	rc.Backoff = jitterBackoff
	rc.ErrorHandler = retryablehttp.PassthroughErrorHandler
	t.client = rc
	return t, nil
}

// Do implements the generated clients' HttpRequestDoer.
func (t *transport) Do(req *http.Request) (*http.Response, error) {
	resp, err := t.do(req)
	if err == nil && isAuthStatus(resp.StatusCode) && t.token != nil {
		// A token file may have been renewed or a command token expired: one
		// more try with a fresh token.
		resp.Body.Close()
		t.token.Invalidate()
		resp, err = t.do(req)
	}
	if err == nil && resp.StatusCode >= 400 {
		// A proxy's 502/504 (or an empty 400) is not slurmrestd's JSON:
		// keep the generated client from failing to decode it, so the
		// status decides.
		if !json.Valid(bytes.TrimSpace(peekBody(resp))) {
			resp.Header.Set("Content-Type", "text/plain")
		}
	}
	return resp, err
}

func (t *transport) do(req *http.Request) (*http.Response, error) {
	r := req.Clone(req.Context())
	if req.GetBody != nil {
		body, err := req.GetBody()
		if err != nil {
			return nil, err
		}
		r.Body = body
	}
	if t.token != nil {
		tok, err := t.token.Token(req.Context())
		if err != nil {
			return nil, fmt.Errorf("%w: %w", backends.ErrAuth, err)
		}
		// slurmrestd 22.05 passes an expired token on to slurmctld, which
		// drops the connection: say what is wrong before that happens.
		if exp, ok := jwtExpiry(tok); ok && time.Now().After(exp) {
			t.token.Invalidate()
			if tok2, err := t.token.Token(req.Context()); err == nil && tok2 != tok {
				tok = tok2
			}
			if exp, ok := jwtExpiry(tok); ok && time.Now().After(exp) {
				return nil, fmt.Errorf("%w: the token from %s for user %q expired at %s; renew the token (e.g. scontrol token lifespan=...) or fix slurmrest.token_* in the site file",
					backends.ErrAuth, t.token.Describe(), t.user, exp.UTC().Format(time.RFC3339))
			}
		}
		r.Header.Set("X-SLURM-USER-TOKEN", tok)
		if t.user != "" {
			r.Header.Set("X-SLURM-USER-NAME", t.user)
		}
	}
	rr, err := retryablehttp.FromRequest(r)
	if err != nil {
		return nil, err
	}
	resp, err := t.client.Do(rr)
	if err != nil {
		// retryablehttp's errors carry the URL and method only, never headers
		return nil, fmt.Errorf("%w: slurmrestd at %s: %w", backends.ErrUnavailable, t.display, cleanNetErr(err))
	}
	if resp.StatusCode >= 300 && resp.StatusCode < 400 {
		resp.Body.Close()
		where := resp.Header.Get("Location")
		if u, err := url.Parse(where); err == nil {
			u.RawQuery, u.User = "", nil
			where = u.String()
		}
		return nil, fmt.Errorf("%w: slurmrestd at %s answered HTTP %d, a redirect to %q: tether does not follow redirects (the JWT goes to the configured URL only); set slurmrest.url to the address slurmrestd serves on",
			backends.ErrUnavailable, t.display, resp.StatusCode, where)
	}
	return resp, nil
}

// countingRT counts the HTTP requests that go out, retries included, and
// the bytes of the answers' bodies.
type countingRT struct {
	next  http.RoundTripper
	n     *atomic.Int64
	bytes *atomic.Int64
}

func (c countingRT) RoundTrip(r *http.Request) (*http.Response, error) {
	c.n.Add(1)
	resp, err := c.next.RoundTrip(r)
	if err == nil && resp.Body != nil && c.bytes != nil {
		resp.Body = countingBody{resp.Body, c.bytes}
	}
	return resp, err
}

// countingBody counts what is read of a body.
type countingBody struct {
	io.ReadCloser
	n *atomic.Int64
}

func (b countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n.Add(int64(n))
	return n, err
}

// jwtExpiry reads the exp claim of a JWT without verifying it.
func jwtExpiry(tok string) (time.Time, bool) {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return time.Time{}, false
	}
	payload, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return time.Time{}, false
	}
	var claims struct {
		Exp *float64 `json:"exp"`
	}
	if json.Unmarshal(payload, &claims) != nil || claims.Exp == nil {
		return time.Time{}, false
	}
	return time.Unix(int64(*claims.Exp), 0), true
}

func cleanNetErr(err error) error {
	var ue interface{ Unwrap() error }
	if errors.As(err, &ue) {
		if inner := errors.Unwrap(err); inner != nil {
			return inner
		}
	}
	return err
}

func isAuthStatus(code int) bool {
	return code == http.StatusUnauthorized || code == http.StatusForbidden || code == http.StatusNetworkAuthenticationRequired
}

// sendOnceKey marks a request that must not reach slurmctld twice (a job
// submit): it is retried only when it certainly was not sent.
type sendOnceKey struct{}

func sendOnce(ctx context.Context) context.Context {
	return context.WithValue(ctx, sendOnceKey{}, true)
}

// notSent reports whether a transport error happened before the request
// left this host (no connection was made).
func notSent(err error) bool {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return true
	}
	return errors.Is(err, syscall.ECONNREFUSED)
}

// retryPolicy retries connection errors, 429, and 5xx answers that are not
// a definite Slurm error (slurmrestd 22.05 answers 500 for a bad
// partition or an unknown job: retrying those cannot help). 4xx answers
// and auth failures are not retried.
func retryPolicy(ctx context.Context, resp *http.Response, err error) (bool, error) {
	if ctx.Err() != nil {
		return false, ctx.Err()
	}
	if ctx.Value(sendOnceKey{}) != nil {
		// a lost answer may hide a job that exists: the caller looks for it
		return (err != nil && notSent(err)) || (resp != nil && resp.StatusCode == http.StatusTooManyRequests), nil
	}
	if err != nil {
		return retryablehttp.DefaultRetryPolicy(ctx, resp, err)
	}
	switch {
	case resp.StatusCode == http.StatusTooManyRequests:
		return true, nil
	case isAuthStatus(resp.StatusCode), resp.StatusCode == http.StatusNotImplemented:
		return false, nil
	case resp.StatusCode >= 500:
		body := peekBody(resp)
		kind := classify(body)
		return kind == errTransient || kind == errNone, nil
	}
	return false, nil
}

// peekBody reads an answer's body and puts it back.
func peekBody(resp *http.Response) []byte {
	if resp.Body == nil {
		return nil
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(b))
	return b
}

// jitterBackoff is exponential backoff with full jitter, honouring
// Retry-After.
func jitterBackoff(lo, hi time.Duration, attempt int, resp *http.Response) time.Duration {
	if resp != nil && resp.StatusCode == http.StatusTooManyRequests {
		if d := retryablehttp.DefaultBackoff(lo, hi, attempt, resp); d > 0 {
			return d
		}
	}
	ceil := lo << min(attempt, 10)
	if ceil > hi || ceil <= 0 {
		ceil = hi
	}
	return lo/2 + time.Duration(rand.Int64N(int64(ceil)))
}

// slurmError is the part of every version's error answer tether reads.
type slurmError struct {
	Errors []struct {
		Error       string `json:"error"`
		Description string `json:"description"`
		ErrorNumber int    `json:"error_number"`
		ErrorCode   int    `json:"error_code"`
	} `json:"errors"`
}

type errKind int

const (
	errNone        errKind = iota // no Slurm error in the body
	errDefinite                   // Slurm refused the request for good, or answered for good (unknown job)
	errTransient                  // any other Slurm error, known or not: retrying may help
	errAuthKind                   // Slurm refused the credentials
	errSubmitLimit                // a limit on the number of jobs turned a submit away (no job was created)
)

// classify reads a Slurm error body. Only the definite refusals of
// Slurm's error table (slurm.Refused, slurm.RefusalIn) and the definite
// answers about a job (2017 unknown, 2021 already ended) are final; every
// other error, including numbers tether does not know, is transient.
func classify(body []byte) errKind {
	num, text := slurmErrorOf(body)
	_, refusal := slurm.RefusalIn(text)
	switch {
	case num == 0 && text == "":
		return errNone
	case num == 1007 || strings.Contains(text, "Authentication") || strings.Contains(text, "authentication"):
		return errAuthKind
	case slurm.SubmitLimit(text) || slurm.JobCountLimit(text):
		return errSubmitLimit
	case slurm.Refused(num), refusal, num == 2017, num == 2021:
		return errDefinite
	}
	return errTransient
}

// accountingPolicy is ESLURM_ACCOUNTING_POLICY: "Job violates
// accounting/QOS policy (job submit limit, user's size and/or time
// limits)", a submit limit or a size/time limit alike.
const accountingPolicy = 2050

// namedLimit is a limit's name in an answer (QOSMaxWallDurationPerJobLimit,
// AssocMaxSubmitJobLimit): with one, 2050 says which limit it is.
var namedLimit = regexp.MustCompile(`[A-Z][A-Za-z]*Limit\b`)

// slurmErrorOf returns the first error number and text of an error body.
func slurmErrorOf(body []byte) (int, string) {
	var se slurmError
	if json.Unmarshal(body, &se) != nil {
		return 0, ""
	}
	for _, e := range se.Errors {
		num := e.ErrorNumber
		if num == 0 {
			num = e.ErrorCode
		}
		text := e.Description
		if e.Error != "" {
			if text != "" {
				text = e.Error + ": " + text
			} else {
				text = e.Error
			}
		}
		if num != 0 || text != "" {
			return num, text
		}
	}
	return 0, ""
}

// errAPIGone: slurmrestd does not serve the API version's paths (it was
// upgraded under a cached choice); its 404 is plain text, not the JSON of
// an unknown job.
var errAPIGone = errors.New("slurmrestd does not serve this API version")

// unknownJob: a 404 that names a job Slurm does not know (a JSON answer),
// not a path slurmrestd does not serve (plain text).
func unknownJob(status int, body []byte) bool {
	return status == http.StatusNotFound && json.Valid(bytes.TrimSpace(body))
}

// answerError turns an error answer into an error: ErrAuth; ErrRejected
// for a definite refusal when rejected is true (a submit); a plain error
// for another definite answer; ErrUnavailable for everything else, known
// or not. The token never appears in it.
func (t *transport) answerError(what string, status int, body []byte, rejected bool) error {
	if status == http.StatusNotFound && !unknownJob(status, body) {
		return fmt.Errorf("%w: %s: slurmrestd at %s answered HTTP 404: %s", errAPIGone, what, t.display, strings.TrimSpace(string(body)))
	}
	num, text := slurmErrorOf(body)
	msg := text
	if msg == "" {
		msg = strings.TrimSpace(string(body))
		if len(msg) > 200 {
			msg = msg[:200] + "..."
		}
	}
	if num != 0 {
		msg = fmt.Sprintf("%s (Slurm error %d)", msg, num)
	}
	var err error
	switch kind := classify(body); {
	case isAuthStatus(status) || kind == errAuthKind:
		src := "no token (unix socket, local auth)"
		if t.token != nil {
			src = t.token.Describe()
		}
		err = fmt.Errorf("%w: %s: slurmrestd at %s answered HTTP %d for user %q with the token from %s: %s; "+
			"renew the token (e.g. scontrol token lifespan=...) or fix slurmrest.user/token_* in the site file",
			backends.ErrAuth, what, t.display, status, t.user, src, msg)
	case kind == errDefinite && rejected && num == accountingPolicy && !namedLimit.MatchString(text):
		err = fmt.Errorf("%w: %w: %w: %w: %s: %s", backends.ErrMaybeSubmitLimit, backends.ErrSubmitLimit, backends.ErrNotSent, backends.ErrUnavailable, what, msg)
	case kind == errSubmitLimit && rejected:
		err = fmt.Errorf("%w: %w: %w: %s: %s", backends.ErrSubmitLimit, backends.ErrNotSent, backends.ErrUnavailable, what, msg)
	case kind == errDefinite && rejected:
		err = fmt.Errorf("%w: %s: %s", backends.ErrRejected, what, msg)
	case kind == errDefinite:
		err = fmt.Errorf("%s: slurmrestd answered HTTP %d: %s", what, status, msg)
	default: // transient, or an answer tether cannot read: retrying may help
		hint := ""
		if t.token != nil && (num == 5005 || num == -1) {
			// 22.05 passes the token on to slurmctld, which drops the
			// connection when it refuses it: the answer looks like an outage.
			hint = fmt.Sprintf("; slurmrestd 22.05 answers this also when slurmctld refuses the token (wrong user %q, a bad signature or a changed JWT key): check the token from %s", t.user, t.token.Describe())
		}
		err = fmt.Errorf("%w: %s: slurmrestd at %s answered HTTP %d: %s%s", backends.ErrUnavailable, what, t.display, status, msg, hint)
	}
	return &answerErr{err: err, status: status, num: num}
}

// answerErr is an error answer of slurmrestd, with the HTTP status and the
// Slurm error number that decide whether a submit certainly failed.
type answerErr struct {
	err    error
	status int
	num    int
}

func (e *answerErr) Error() string { return e.err.Error() }
func (e *answerErr) Unwrap() error { return e.err }

// notCreated are the Slurm errors with which slurmctld (or slurmrestd on
// its behalf) answers a submit it did not take, though it may take it
// later: no connection to slurmctld was made (1800), its rate limit (1804,
// 1805), a controller in standby (2027, 2131), no room for the job record
// (2007), busy nodes (2016), EAGAIN (11). sbatch retries the last three
// itself. A send or receive failure, a timeout or zero bytes are not
// among them: slurmctld may have created the job before the answer was
// lost.
var notCreated = map[int]bool{1800: true, 1804: true, 1805: true, 2027: true, 2131: true, 2007: true, 2016: true, 11: true}

// certainlyNotSubmitted reports whether a failed submit certainly never
// created a job, so that sending it again cannot duplicate one: the
// connection to slurmrestd was never made, a rate limiter answered 429,
// or slurmctld answered that it did not take the job.
func certainlyNotSubmitted(err error) bool {
	var ae *answerErr
	if errors.As(err, &ae) {
		return ae.status == http.StatusTooManyRequests || notCreated[ae.num]
	}
	return notSent(err)
}

// ctldDidNotTake reports whether slurmctld answered a submit with one of
// the notCreated errors.
func ctldDidNotTake(err error) bool {
	var ae *answerErr
	return errors.As(err, &ae) && notCreated[ae.num]
}
