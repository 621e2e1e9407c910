package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// procCPUSeconds is a process's user+system CPU time (/proc/PID/stat).
func procCPUSeconds(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / 100 // USER_HZ
}

// BenchmarkWatch500: one `tether watch --stdin` waiting for 500 local runs
// (Tasks that sleep 20-50 s, staggered): its CPU at steady state (% of one
// core over 20 s while all run), its RSS, and job end -> outcome line
// latency (median and max). Targets: under 5 % of a core, median <= 2 s.
func BenchmarkWatch500(b *testing.B) {
	const n = 500
	dir := b.TempDir()
	env := tetherEnv("XDG_STATE_HOME="+filepath.Join(dir, "state"), "HOME="+dir, "PATH="+filepath.Dir(tetherBin)+":"+os.Getenv("PATH"))
	os.WriteFile(filepath.Join(dir, "t.toml"), []byte(`name = "w"
script = '''
sleep $(( 20 + 0x${TETHER_RUN_ID: -6} % 31 ))
date +%s%N > "$HOME/ended-$TETHER_RUN_ID"
'''
[resources]
walltime = "5m"
`), 0o644)
	for b.Loop() {
		var ids []string
		for range n {
			cmd := exec.Command(tetherBin, "submit", "t.toml")
			cmd.Env, cmd.Dir = env, dir
			out, err := cmd.Output()
			if err != nil {
				b.Fatalf("submit: %v", err)
			}
			var o struct {
				RunID string `json:"run_id"`
			}
			json.Unmarshal([]byte(strings.TrimSpace(string(out))[strings.LastIndexByte(strings.TrimSpace(string(out)), '\n')+1:]), &o)
			ids = append(ids, o.RunID)
		}
		w := exec.Command(tetherBin, "watch", "--stdin")
		w.Env, w.Dir = env, dir
		stdin, _ := w.StdinPipe()
		stdout, _ := w.StdoutPipe()
		if err := w.Start(); err != nil {
			b.Fatal(err)
		}
		got := map[string]time.Time{}
		done := make(chan struct{})
		go func() {
			defer close(done)
			sc := bufio.NewScanner(stdout)
			sc.Buffer(make([]byte, 1<<20), 1<<22)
			for sc.Scan() {
				var ev watchEvent
				if json.Unmarshal(sc.Bytes(), &ev) == nil && ev.Event != "status" {
					got[ev.Run] = time.Now()
					if len(got) == n {
						return
					}
				}
			}
		}()
		for _, id := range ids {
			fmt.Fprintln(stdin, id)
		}
		// steady state: 20 s while every run sleeps
		time.Sleep(5 * time.Second) // the watch settles in; a benchmark window, not a synchronisation
		c0, t0 := procCPUSeconds(w.Process.Pid), time.Now()
		time.Sleep(15 * time.Second)
		cpu := (procCPUSeconds(w.Process.Pid) - c0) / time.Since(t0).Seconds()
		rss, _ := procStatusKB(w.Process.Pid, "VmRSS")
		select {
		case <-done:
		case <-time.After(3 * time.Minute):
			b.Fatalf("only %d of %d outcomes", len(got), n)
		}
		stdin.Close()
		w.Wait()
		var lat []float64
		for _, id := range ids {
			raw, err := os.ReadFile(filepath.Join(dir, "ended-"+id))
			if err != nil {
				continue
			}
			ns, _ := strconv.ParseInt(strings.TrimSpace(string(raw)), 10, 64)
			lat = append(lat, got[id].Sub(time.Unix(0, ns)).Seconds())
		}
		sort.Float64s(lat)
		b.ReportMetric(cpu*100, "%core-steady")
		b.ReportMetric(float64(rss)/1024, "MB-rss")
		b.ReportMetric(lat[len(lat)/2], "s-latency-median")
		b.ReportMetric(lat[len(lat)-1], "s-latency-max")
		b.ReportMetric(0, "ns/op")
	}
}
