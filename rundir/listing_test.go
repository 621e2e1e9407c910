package rundir

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/tether-hpc/tether/schema"
)

var (
	flagListSeed  = flag.Uint64("list.seed", 0, "replay one listing schedule (its seed)")
	flagListSeeds = flag.Int("list.seeds", 200, "how many listing schedules TestRowsMatchTheRuns explores")
)

// truth reads every run's row from its own files, as a listing without
// any cache would.
func truth(t *testing.T, s *Store) map[string]Row {
	ents, _ := os.ReadDir(filepath.Join(s.Dir, "runs"))
	out := map[string]Row{}
	ids := map[string]bool{}
	for _, e := range ents {
		ids[e.Name()] = true
	}
	for id := range ids {
		if elementID.MatchString(id) && ids[elementID.ReplaceAllString(id, "")] {
			out[id] = Row{RunID: id, Element: true}
			continue
		}
		out[id] = s.readRow(id)
	}
	return out
}

// The listing cache never shows a stale row: over generated schedules of
// creating, deciding, reopening (a key's new generation), activating,
// removing runs and array elements, with listings by the cache's owner and
// by a second lister that cannot take its lock, and with time passing
// (runs/'s mtime aged past ClockSlack, so the fast path that skips reading
// runs/ is taken), every Rows equals a fresh read of every run. A failing
// schedule replays with -list.seed=N.
func TestRowsMatchTheRuns(t *testing.T) {
	seeds := []uint64{}
	if *flagListSeed != 0 {
		seeds = append(seeds, *flagListSeed)
	} else {
		for i := range *flagListSeeds {
			seeds = append(seeds, uint64(i+1))
		}
	}
	for _, seed := range seeds {
		if err := rowsSchedule(t, seed); err != nil {
			t.Fatalf("seed %d: %v (replay: go test ./rundir -run TestRowsMatchTheRuns -list.seed=%d -v)", seed, err, seed)
		}
	}
}

func rowsSchedule(t *testing.T, seed uint64) error {
	rng := rand.New(rand.NewPCG(seed, 0))
	s, err := Open(t.TempDir())
	if err != nil {
		return err
	}
	var ids []string
	clock := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	age := func() {
		// time passes: runs/ was last changed long ago
		old := time.Now().Add(-time.Duration(3+rng.IntN(60)) * time.Second)
		os.Chtimes(filepath.Join(s.Dir, "runs"), old, old)
	}
	pick := func() (Run, bool) {
		if len(ids) == 0 {
			return Run{}, false
		}
		return s.Run(ids[rng.IntN(len(ids))]), true
	}
	for step := range 60 {
		var what string
		switch op := rng.IntN(11); op {
		case 0, 1: // create a run (some as arrays with elements)
			clock = clock.Add(time.Second)
			id := NewRunID(fmt.Sprintf("r%d", step), clock)
			rec := &schema.RunRecord{RunID: id, Site: "s", Task: schema.Task{Name: "t"}, CreatedAt: clock,
				Attempts: []schema.Attempt{{N: 1, JobID: fmt.Sprint(step)}}}
			if rng.IntN(4) == 0 {
				rec.Task.Array.Count = 2
				for i := range 2 {
					if _, err := s.PrepareRun(schema.ElementRunID(id, i)); err != nil {
						return err
					}
				}
			}
			if _, err := s.CreateRun(rec); err != nil {
				return err
			}
			ids = append(ids, id)
			what = "create " + id
		case 2, 3: // decide
			if r, ok := pick(); ok {
				r.WriteOutcome(&schema.Outcome{RunID: r.ID, Outcome: []string{"succeeded", "failed", "partial"}[rng.IntN(3)], Final: true})
				what = "decide " + r.ID
			}
		case 4: // a key's new generation: the outcome archived, a new attempt
			if r, ok := pick(); ok {
				if _, done, _ := r.Outcome(); done {
					r.ArchiveOutcome(step)
					rec, _ := r.Load()
					rec.Attempts = append(rec.Attempts, schema.Attempt{N: len(rec.Attempts) + 1, JobID: fmt.Sprint(100 + step)})
					r.Save(rec)
					what = "reopen " + r.ID
				}
			}
		case 5: // run.json changes (a retry) without a marker
			if r, ok := pick(); ok {
				if rec, err := r.Load(); err == nil {
					rec.Attempts = append(rec.Attempts, schema.Attempt{N: len(rec.Attempts) + 1, JobID: fmt.Sprint(200 + step)})
					r.Save(rec)
					what = "retry " + r.ID
				}
			}
		case 6: // active / not active
			if r, ok := pick(); ok {
				if rng.IntN(2) == 0 {
					s.SetActive(r.ID, "1", "s")
				} else {
					s.ClearActive(r.ID)
				}
				what = "active toggle " + r.ID
			}
		case 7: // removed by hand, or pruned
			if r, ok := pick(); ok {
				if rng.IntN(2) == 0 {
					os.RemoveAll(r.Dir)
					what = "rm -rf " + r.ID
				} else {
					s.Prune(context.Background(), r.ID)
					what = "prune " + r.ID
				}
			}
		case 8: // a second lister while the cache's lock is held
			l, _ := LockFile(context.Background(), filepath.Join(s.indexDir(), "list.lock"))
			rows, err := s.Rows()
			l.Unlock()
			if err != nil {
				return err
			}
			if err := compare(rows, truth(t, s)); err != nil {
				return fmt.Errorf("step %d, listing without the lock: %w", step, err)
			}
			what = "list (no lock)"
		case 9:
			age()
			what = "time passes"
		default:
			what = "list"
		}
		rows, err := s.Rows()
		if err != nil {
			return err
		}
		if err := compare(rows, truth(t, s)); err != nil {
			return fmt.Errorf("step %d (%s): %w", step, what, err)
		}
		if testing.Verbose() && *flagListSeed != 0 {
			t.Logf("step %d: %s: %d rows", step, what, len(rows))
		}
	}
	return nil
}

func compare(rows []Row, want map[string]Row) error {
	if len(rows) != len(want) {
		return fmt.Errorf("%d rows, %d runs", len(rows), len(want))
	}
	for i, r := range rows {
		w, ok := want[r.RunID]
		if !ok {
			return fmt.Errorf("row for %s, which is gone", r.RunID)
		}
		if !r.same(w) {
			return fmt.Errorf("row %+v, the run says %+v", r, w)
		}
		if i > 0 && rows[i-1].Created.After(r.Created) {
			return fmt.Errorf("rows out of order at %s", r.RunID)
		}
	}
	return nil
}
