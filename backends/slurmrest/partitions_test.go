package slurmrest

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/tether-hpc/tether/backends"
)

// The partition limits are read from the answers of slurmrestd 22.05
// (v0.0.38) and 24.11 (v0.0.40-42) captured on the test clusters (debug:
// MaxTime 1 day, the default; short: MaxTime 2 min; one node, 32 CPUs).
// Only v0.0.38 says which partition is the default.
func TestPartitionsEveryVersion(t *testing.T) {
	for _, c := range []struct{ version, pkg, file string }{
		{"v0.0.38", "v0038", "2205-v0.0.38-partitions.json"},
		{"v0.0.40", "v0040", "2411-v0.0.40-partitions.json"},
		{"v0.0.41", "v0041", "2411-v0.0.41-partitions.json"},
		{"v0.0.42", "v0042", "2411-v0.0.42-partitions.json"},
	} {
		t.Run(c.version, func(t *testing.T) {
			raw := capture(t, c.pkg, c.file)
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if !strings.HasPrefix(strings.TrimPrefix(r.URL.Path, "/slurm/"+c.version), "/partitions") {
					http.NotFound(w, r)
					return
				}
				w.Header().Set("Content-Type", "application/json")
				w.Write(raw)
			}))
			defer srv.Close()
			b, err := New(Config{URL: srv.URL, APIVersion: c.version, User: "alice", Token: tokenFile(t), Timeout: 10 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			parts, err := b.Partitions(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			want := []backends.Partition{
				{Name: "debug", Default: c.version == "v0.0.38", Up: true, MaxTime: 24 * time.Hour, TotalNodes: 1, TotalCPUs: 32},
				{Name: "short", Up: true, MaxTime: 2 * time.Minute, TotalNodes: 1, TotalCPUs: 32},
			}
			if len(parts) != len(want) {
				t.Fatalf("partitions %+v, want %+v", parts, want)
			}
			for i := range want {
				if parts[i] != want[i] {
					t.Errorf("partition %d: %+v, want %+v", i, parts[i], want[i])
				}
			}
		})
	}
}
