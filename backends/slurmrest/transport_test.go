package slurmrest

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tether-hpc/tether/backends"
)

const secret = "eyJhbGciOiJIUzI1NiJ9.c2VjcmV0LXRva2Vu.NOT-TO-BE-LOGGED"

func tokenFile(t *testing.T) *FileToken {
	p := filepath.Join(t.TempDir(), "jwt")
	os.WriteFile(p, []byte("SLURM_JWT="+secret+"\n"), 0o600)
	return &FileToken{Path: p}
}

func testBackend(t *testing.T, url string) *Backend {
	b, err := New(Config{URL: url, APIVersion: "v0.0.42", User: "alice", Token: tokenFile(t), Timeout: 10 * time.Second, Retries: 3})
	if err != nil {
		t.Fatal(err)
	}
	b.t.client.RetryWaitMin, b.t.client.RetryWaitMax = time.Millisecond, 5*time.Millisecond
	return b
}

func noSecret(t *testing.T, err error) {
	t.Helper()
	if err != nil && strings.Contains(err.Error(), secret) {
		t.Fatalf("the token leaked into an error: %v", err)
	}
}

// Retries stay bounded: a server that keeps failing gets RetryMax+1 tries,
// and the caller gets ErrUnavailable, never a false failure of the job.
func TestRetriesBounded(t *testing.T) {
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		if r.Header.Get("X-SLURM-USER-TOKEN") != secret || r.Header.Get("X-SLURM-USER-NAME") != "alice" {
			t.Errorf("auth headers missing")
		}
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer srv.Close()
	b := testBackend(t, srv.URL)
	_, err := b.Query(context.Background(), []backends.JobID{"1"})
	if !errors.Is(err, backends.ErrUnavailable) {
		t.Fatalf("want ErrUnavailable, got %v", err)
	}
	noSecret(t, err)
	if got := n.Load(); got != 4 {
		t.Errorf("%d requests, want 4 (1 + 3 retries)", got)
	}
}

// Connection resets are retried the same way.
func TestRetriesOnReset(t *testing.T) {
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1) <= 2 {
			c, _, _ := w.(http.Hijacker).Hijack()
			c.(*net.TCPConn).SetLinger(0)
			c.Close()
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"jobs":[{"job_id":"7","state":["RUNNING"]}]}`))
	}))
	defer srv.Close()
	b := testBackend(t, srv.URL)
	got, err := b.Query(context.Background(), []backends.JobID{"7"})
	if err != nil || got["7"].State != backends.Running {
		t.Fatalf("%v %v", got, err)
	}
	if n.Load() != 3 {
		t.Errorf("%d requests, want 3", n.Load())
	}
}

// A definite Slurm error in a 500 (22.05 style) is not retried, and a
// submit with it is a rejection (exit 2).
func TestDefiniteErrorNotRetried(t *testing.T) {
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusInternalServerError)
		w.Write([]byte(`{"errors":[{"error_number":2000,"error":"Invalid partition name specified"}]}`))
	}))
	defer srv.Close()
	b := testBackend(t, srv.URL)
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "job.sh"), []byte("#!/bin/bash\n"), 0o755)
	_, err := b.Submit(context.Background(), backends.JobRequest{Script: filepath.Join(dir, "job.sh"), Dir: dir})
	if !errors.Is(err, backends.ErrRejected) || !strings.Contains(err.Error(), "Invalid partition name specified") {
		t.Fatalf("want ErrRejected with Slurm's message, got %v", err)
	}
	if n.Load() != 1 {
		t.Errorf("%d requests, want 1", n.Load())
	}
}

// A refused token is an auth error that names where the token came from,
// not the token; the token is re-read once before giving up.
func TestAuthError(t *testing.T) {
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		w.WriteHeader(http.StatusUnauthorized)
		w.Write([]byte("Authentication failure"))
	}))
	defer srv.Close()
	b := testBackend(t, srv.URL)
	_, err := b.Query(context.Background(), []backends.JobID{"1"})
	if !errors.Is(err, backends.ErrAuth) || !strings.Contains(err.Error(), "token file") || !strings.Contains(err.Error(), "renew the token") {
		t.Fatalf("want a clear ErrAuth, got %v", err)
	}
	noSecret(t, err)
	if n.Load() != 2 {
		t.Errorf("%d requests, want 2 (one with a re-read token)", n.Load())
	}
}

func TestTokenSources(t *testing.T) {
	ft := tokenFile(t)
	tok, err := ft.Token(context.Background())
	if err != nil || tok != secret {
		t.Fatalf("file token: %q %v", tok, err)
	}
	time.Sleep(10 * time.Millisecond)
	os.WriteFile(ft.Path, []byte("newtoken\n"), 0o600)
	if tok, _ := ft.Token(context.Background()); tok != "newtoken" {
		t.Errorf("file token not reread: %q", tok)
	}
	t.Setenv("TEST_JWT", "SLURM_JWT=envtoken")
	if tok, _ := (EnvToken{Name: "TEST_JWT"}).Token(context.Background()); tok != "envtoken" {
		t.Errorf("env token %q", tok)
	}
	ct := &CommandToken{Argv: []string{"echo", "SLURM_JWT=cmdtoken"}}
	if tok, _ := ct.Token(context.Background()); tok != "cmdtoken" {
		t.Errorf("command token %q", tok)
	}
	bad := &CommandToken{Argv: []string{"sh", "-c", "echo " + secret + "; exit 1"}}
	_, err = bad.Token(context.Background())
	if err == nil {
		t.Fatal("failing command accepted")
	}
	noSecret(t, err)
	if _, err := (&FileToken{Path: "/nonexistent/jwt"}).Token(context.Background()); err == nil || !strings.Contains(err.Error(), "/nonexistent/jwt") {
		t.Errorf("missing file: %v", err)
	}
}
