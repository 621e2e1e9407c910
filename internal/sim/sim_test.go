package sim

import (
	"flag"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

var (
	flagSeed  = flag.Uint64("sim.seed", 0, "replay one schedule (its seed)")
	flagSeeds = flag.Int("sim.seeds", 1000, "how many schedules TestSimulation explores")
	flagSteps = flag.Int("sim.steps", 120, "steps per schedule before it quiesces")
	flagFirst = flag.Uint64("sim.first", 1, "the first seed of the range")
)

// simDir is a fresh directory, in memory where the machine has one.
func simDir(t *testing.T) string {
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		d, err := os.MkdirTemp("/dev/shm", "tether-sim-")
		if err == nil {
			t.Cleanup(func() { os.RemoveAll(d) })
			return d
		}
	}
	return t.TempDir()
}

// TestSimulation explores generated fault schedules against the real
// engine; every invariant is checked after every step. A failure prints
// the seed; -sim.seed=N replays that schedule (with -v, its history).
func TestSimulation(t *testing.T) {
	if *flagSeed != 0 {
		w := play(t, *flagSeed, *flagSteps, filepath.Join(simDir(t), "s"))
		if testing.Verbose() {
			for _, h := range w.history {
				t.Log(h)
			}
		}
		t.Logf("seed %d: %+v", *flagSeed, w.Stats())
		return
	}
	n := *flagSeeds
	if testing.Short() {
		n = min(n, 200)
	}
	workers := max(runtime.GOMAXPROCS(0), 1)
	var mu sync.Mutex
	var total Stats
	failures := 0
	start := time.Now()
	seeds := make(chan uint64)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for seed := range seeds {
				dir := filepath.Join(simDir(t), "s")
				rt := &recorder{}
				st := play(rt, seed, *flagSteps, dir).Stats()
				mu.Lock()
				total.Steps += st.Steps
				total.Crashes += st.Crashes
				total.Interleavings += st.Interleavings
				total.Decisions += st.Decisions
				total.Jobs += st.Jobs
				total.EarlyDecisions += st.EarlyDecisions
				if len(rt.errs) > 0 && failures < 3 {
					failures++
					for _, e := range rt.errs {
						t.Error(e)
					}
				}
				mu.Unlock()
			}
		}()
	}
	for i := range n {
		seeds <- *flagFirst + uint64(i)
	}
	close(seeds)
	wg.Wait()
	t.Logf("%d schedules, %d steps, %d crashes, %d interleavings, %d decisions (%d on a conclusive exit file before the scheduler's word), %d jobs in %s",
		n, total.Steps, total.Crashes, total.Interleavings, total.Decisions, total.EarlyDecisions, total.Jobs, time.Since(start).Round(time.Millisecond))
}

// TestSimulationCatchesABrokenFindByTag is the simulation's self-test:
// with find-by-tag made blind, lost submit answers turn into second jobs
// (invariant 1) or runs decided while their unseen job lives on
// (invariant 3), and the invariants must say so within a few hundred
// schedules.
func TestSimulationCatchesABrokenFindByTag(t *testing.T) {
	base := simDir(t)
	for seed := uint64(1); seed <= 400; seed++ {
		rt := &recorder{}
		play(rt, seed, *flagSteps, filepath.Join(base, "s"), (*World).BreakFindByTag)
		if len(rt.errs) > 0 {
			if !strings.Contains(rt.errs[0], "invariant 1 ") && !strings.Contains(rt.errs[0], "invariant 3 ") {
				t.Errorf("seed %d broke an unrelated invariant:\n%s", seed, rt.errs[0])
			}
			t.Logf("caught at seed %d: %s", seed, strings.SplitN(rt.errs[0], "\n", 3)[:2])
			return
		}
	}
	t.Error("400 schedules with a blind find-by-tag broke no invariant: the simulation cannot see duplicate jobs")
}
