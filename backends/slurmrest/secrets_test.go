package slurmrest

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/tether-hpc/tether/backends"
)

// A redirecting slurmrestd never makes tether send the JWT elsewhere: the
// redirect is not followed, and the error says why.
func TestRedirectNeverCarriesTheToken(t *testing.T) {
	var elsewhere atomic.Int32
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		elsewhere.Add(1)
		if r.Header.Get("X-SLURM-USER-TOKEN") != "" {
			t.Errorf("the token reached the redirect's target")
		}
		w.WriteHeader(http.StatusOK)
	}))
	defer other.Close()
	for _, code := range []int{http.StatusMovedPermanently, http.StatusFound, http.StatusTemporaryRedirect, http.StatusPermanentRedirect} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, other.URL+r.URL.Path+"?secret=x", code)
		}))
		b := testBackend(t, srv.URL)
		_, err := b.Query(context.Background(), []backends.JobID{"1"})
		if err == nil || !strings.Contains(err.Error(), "tether does not follow redirects") || strings.Contains(err.Error(), "secret=x") {
			t.Errorf("HTTP %d: %v", code, err)
		}
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, "job.sh"), []byte("#!/bin/bash\n"), 0o700)
		if _, err := b.Submit(context.Background(), backends.JobRequest{Script: filepath.Join(dir, "job.sh"), Dir: dir}); errors.Is(err, backends.ErrRejected) || err == nil {
			t.Errorf("HTTP %d submit: %v", code, err)
		}
		srv.Close()
	}
	if n := elsewhere.Load(); n != 0 {
		t.Errorf("%d requests followed a redirect", n)
	}
}

// The job's environment is the request's (the site policy's), never this
// process's: a secret in tether's own environment does not reach the
// submit body, nor does the JWT variable.
func TestSubmitBodyCarriesOnlyTheRequestEnvironment(t *testing.T) {
	t.Setenv("DB_PASSWORD", "pw-in-tethers-own-env")
	t.Setenv("SLURM_JWT", "jwt-in-env")
	var body atomic.Value
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b := make([]byte, 1<<20)
		n, _ := r.Body.Read(b)
		body.Store(string(b[:n]))
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"job_id":42,"errors":[],"warnings":[]}`))
	}))
	defer srv.Close()
	b := testBackend(t, srv.URL)
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "job.sh"), []byte("#!/bin/bash\n"), 0o700)
	_, err := b.Submit(context.Background(), backends.JobRequest{Script: filepath.Join(dir, "job.sh"), Dir: dir,
		Env: map[string]string{"PLAIN": "yes", "SLURM_JWT": "no", "TETHER_X": "no"}})
	if err != nil {
		t.Fatal(err)
	}
	got, _ := body.Load().(string)
	if !strings.Contains(got, `PLAIN=yes`) || strings.Contains(got, "pw-in-tethers-own-env") || strings.Contains(got, "SLURM_JWT") || strings.Contains(got, "TETHER_X") {
		t.Errorf("submit body environment: %s", got)
	}
}

// sites check says when a proxy from the environment would carry the
// JWT, and NO_PROXY is honoured.
func TestProxyFor(t *testing.T) {
	proxied := func(r *http.Request) (*url.URL, error) {
		if r.URL.Hostname() == "direct.example.org" {
			return nil, nil
		}
		return url.Parse("http://user:pw@proxy.example.org:3128")
	}
	if got := ProxyFor("https://slurm.example.org:6820", proxied); got != "http://proxy.example.org:3128" {
		t.Errorf("proxied: %q", got)
	}
	if got := ProxyFor("https://direct.example.org:6820", proxied); got != "" {
		t.Errorf("NO_PROXY host: %q", got)
	}
	if got := ProxyFor("unix:///run/slurmrestd.sock", proxied); got != "" {
		t.Errorf("unix socket: %q", got)
	}
}

// A token file others can read is warned about once (never with its
// content); a private one is not.
func TestTokenFileReadableByOthersWarnsOnce(t *testing.T) {
	for _, c := range []struct {
		mode os.FileMode
		warn bool
	}{{0o600, false}, {0o400, false}, {0o640, true}, {0o644, true}, {0o604, true}} {
		p := filepath.Join(t.TempDir(), "jwt")
		os.WriteFile(p, []byte("SLURM_JWT="+secret+"\n"), 0o600)
		os.Chmod(p, c.mode)
		var warnings []string
		ft := &FileToken{Path: p, Warn: func(msg string, args ...any) {
			warnings = append(warnings, fmt.Sprint(append([]any{msg}, args...)...))
		}}
		for range 3 {
			if tok, err := ft.Token(context.Background()); err != nil || tok != secret {
				t.Fatalf("mode %04o: %q %v", c.mode, tok, err)
			}
			ft.Invalidate()
		}
		if got := len(warnings); (got == 1) != c.warn || got > 1 {
			t.Errorf("mode %04o: %d warnings %q, want warn=%v once", c.mode, got, warnings, c.warn)
		}
		for _, w := range warnings {
			if strings.Contains(w, secret) || !strings.Contains(w, p) || !strings.Contains(w, fmt.Sprintf("%04o", c.mode)) {
				t.Errorf("warning %q: must name the file and mode, never the token", w)
			}
		}
	}
}
