package monitor

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tether-hpc/tether/backends"
	"github.com/tether-hpc/tether/backends/fake"
	"github.com/tether-hpc/tether/rundir"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newPoller(t *testing.T, be backends.Backend, clk *clock) (*Poller, *rundir.Store) {
	t.Helper()
	st, err := rundir.Open(filepath.Join(t.TempDir(), "state"))
	if err != nil {
		t.Fatal(err)
	}
	return &Poller{Store: st, Backend: be, MinInterval: time.Second, Now: clk.Now}, st
}

// Many waiters on one site share one batched query per interval, and the
// query covers every active job of the site.
func TestPollerOneQueryForManyWaiters(t *testing.T) {
	be := fake.New()
	clk := &clock{t: time.Unix(1e9, 0)}
	p, store := newPoller(t, be, clk)
	var ids []backends.JobID
	for i := 0; i < 200; i++ {
		id, _ := be.Submit(context.Background(), backends.JobRequest{})
		ids = append(ids, id)
		store.SetActive(fmt.Sprintf("run-%d", i), string(id), "")
	}
	var wg sync.WaitGroup
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			snap, err := p.Status(context.Background(), []backends.JobID{ids[i]}, time.Second)
			if err != nil || snap.Jobs[ids[i]].State != backends.Pending {
				t.Errorf("waiter %d: %v %+v", i, err, snap.Jobs[ids[i]])
			}
		}(i)
	}
	wg.Wait()
	if n := be.Queries.Load(); n != 1 {
		t.Errorf("%d queries for 50 waiters, want 1", n)
	}
	clk.Add(2 * time.Second)
	p.Status(context.Background(), ids[:1], time.Second)
	if n := be.Queries.Load(); n != 2 {
		t.Errorf("after the interval: %d queries, want 2", n)
	}
}

func TestPollerMissingAndErrors(t *testing.T) {
	be := fake.New()
	clk := &clock{t: time.Unix(1e9, 0)}
	p, _ := newPoller(t, be, clk)
	id, _ := be.Submit(context.Background(), backends.JobRequest{})
	be.Forget(id)
	snap, err := p.Status(context.Background(), []backends.JobID{id}, 0)
	if err != nil {
		t.Fatal(err)
	}
	first, ok := snap.Missing[id]
	if !ok {
		t.Fatal("vanished job not marked missing")
	}
	clk.Add(5 * time.Second)
	snap, _ = p.Status(context.Background(), []backends.JobID{id}, 0)
	if !snap.Missing[id].Equal(first) {
		t.Errorf("missing-since moved: %v -> %v", first, snap.Missing[id])
	}
	// Failures keep the last good answer and back off.
	be.Fail(errors.New("slurmctld down"))
	clk.Add(5 * time.Second)
	_, err = p.Status(context.Background(), []backends.JobID{id}, 0)
	if !errors.Is(err, ErrQuery) {
		t.Fatalf("want ErrQuery, got %v", err)
	}
	q := be.Queries.Load()
	_, err = p.Status(context.Background(), []backends.JobID{id}, 0)
	if !errors.Is(err, ErrQuery) || be.Queries.Load() != q {
		t.Errorf("retried at once during backoff (queries %d -> %d)", q, be.Queries.Load())
	}
	be.Fail(nil)
	clk.Add(time.Minute)
	if _, err = p.Status(context.Background(), []backends.JobID{id}, 0); err != nil {
		t.Errorf("after recovery: %v", err)
	}
}

func TestPollerRateCap(t *testing.T) {
	be := fake.New()
	clk := &clock{t: time.Unix(1e9, 0)}
	p, _ := newPoller(t, be, clk)
	p.MinInterval, p.MaxPerMinute = 0, 3
	id, _ := be.Submit(context.Background(), backends.JobRequest{})
	for i := 0; i < 10; i++ {
		p.Status(context.Background(), []backends.JobID{id}, 0)
		clk.Add(time.Second)
	}
	if n := be.Queries.Load(); n != 3 {
		t.Errorf("%d queries in 10s with a cap of 3/min", n)
	}
}

// timedBackend records when each query starts.
type timedBackend struct {
	backends.Backend
	clk   *clock
	mu    sync.Mutex
	times []time.Time
}

func (b *timedBackend) Query(ctx context.Context, ids []backends.JobID) (map[backends.JobID]backends.JobStatus, error) {
	b.mu.Lock()
	b.times = append(b.times, b.clk.Now())
	b.mu.Unlock()
	return b.Backend.Query(ctx, ids)
}

// The per-minute cap holds in every 60-second span, not only per
// calendar window: callers asking every second for 5 minutes never get a
// fourth query within a minute of three others.
func TestPollerRateCapSliding(t *testing.T) {
	clk := &clock{t: time.Unix(1e9, 0)}
	be := &timedBackend{Backend: fake.New(), clk: clk}
	p, _ := newPoller(t, be, clk)
	p.MinInterval, p.MaxPerMinute = 0, 3
	id, _ := be.Submit(context.Background(), backends.JobRequest{})
	for i := 0; i < 300; i++ {
		p.Status(context.Background(), []backends.JobID{id}, 0)
		if i%7 == 0 {
			clk.Add(5 * time.Second) // uneven steps
		} else {
			clk.Add(time.Second)
		}
	}
	if len(be.times) < 15 {
		t.Fatalf("only %d queries in %v: the cap starves callers", len(be.times), clk.Now().Sub(time.Unix(1e9, 0)))
	}
	for i := range be.times {
		n := 0
		for _, q := range be.times[:i+1] {
			if be.times[i].Sub(q) < time.Minute {
				n++
			}
		}
		if n > 3 {
			t.Fatalf("%d queries in the minute before %v (cap 3): %v", n, be.times[i].Sub(time.Unix(1e9, 0)), be.times)
		}
	}
}

// Separate pollers sharing the state dir (as separate `tether wait`
// processes do) still make one query per interval between them.
func TestPollerOneQueryAcrossPollers(t *testing.T) {
	be := fake.New()
	clk := &clock{t: time.Unix(1e9, 0)}
	first, store := newPoller(t, be, clk)
	var ids []backends.JobID
	for i := 0; i < 50; i++ {
		id, _ := be.Submit(context.Background(), backends.JobRequest{})
		ids = append(ids, id)
		store.SetActive(fmt.Sprintf("run-%d", i), string(id), "")
	}
	pollers := []*Poller{first}
	for i := 1; i < 50; i++ {
		pollers = append(pollers, &Poller{Store: store, Backend: be, MinInterval: time.Second, Now: clk.Now})
	}
	for round := 0; round < 5; round++ {
		var wg sync.WaitGroup
		for i, p := range pollers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := p.Status(context.Background(), []backends.JobID{ids[i]}, time.Second); err != nil {
					t.Error(err)
				}
			}()
		}
		wg.Wait()
		clk.Add(1500 * time.Millisecond) // every round finds the snapshot too old
	}
	if n := be.Queries.Load(); n != 5 {
		t.Errorf("%d queries for 50 pollers over 5 intervals, want 5", n)
	}
}

// A refused-credentials failure stays recognisable for every process that
// reads it from the shared cache (`tether status` exits 3 on it).
func TestPollerKeepsAuthErrorKind(t *testing.T) {
	be := fake.New()
	clk := &clock{t: time.Unix(1e9, 0)}
	p, store := newPoller(t, be, clk)
	id, _ := be.Submit(context.Background(), backends.JobRequest{})
	be.Fail(fmt.Errorf("%w: token expired", backends.ErrAuth))
	if _, err := p.Status(context.Background(), []backends.JobID{id}, 0); !errors.Is(err, backends.ErrAuth) {
		t.Fatalf("direct: %v", err)
	}
	other := &Poller{Store: store, Backend: be, MinInterval: time.Second, Now: clk.Now}
	if _, err := other.Status(context.Background(), []backends.JobID{id}, time.Minute); !errors.Is(err, backends.ErrAuth) || !errors.Is(err, ErrQuery) {
		t.Fatalf("from the cache: %v", err)
	}
	be.Fail(errors.New("slurmctld down"))
	clk.Add(time.Minute)
	if _, err := other.Status(context.Background(), []backends.JobID{id}, 0); errors.Is(err, backends.ErrAuth) {
		t.Fatalf("an outage read as an auth error: %v", err)
	}
}

// A throttled scheduler (slurmctld's rl_enable, HTTP 429) is said once,
// backed off from harder than an ordinary failure, and forgotten after a
// good answer.
func TestPollerBacksOffWhenRateLimited(t *testing.T) {
	be := fake.New()
	clk := &clock{t: time.Unix(1e9, 0)}
	p, _ := newPoller(t, be, clk)
	var logged strings.Builder
	p.Log = slog.New(slog.NewTextHandler(&logged, nil))
	id, _ := be.Submit(context.Background(), backends.JobRequest{})
	ctx := context.Background()
	if _, err := p.Status(ctx, []backends.JobID{id}, 0); err != nil {
		t.Fatal(err)
	}
	be.Fail(fmt.Errorf("%w: squeue: slurm_load_jobs error: RPC rate limit exceeded", backends.ErrUnavailable))
	for range 3 {
		clk.Add(time.Hour) // past any back-off
		if _, err := p.Status(ctx, []backends.JobID{id}, 0); !errors.Is(err, ErrQuery) {
			t.Fatalf("want ErrQuery, got %v", err)
		}
	}
	if n := strings.Count(logged.String(), "rate-limiting"); n != 1 {
		t.Errorf("said %d times that the scheduler throttles, want once:\n%s", n, logged.String())
	}
	snap := p.Cached()
	if snap.RateLimitedSince.IsZero() {
		t.Fatal("the snapshot does not record the throttling")
	}
	// harder back-off: 3 failures throttled wait 2^5 intervals, not 2^3
	if wait := p.spacing(&snap, snap.ErrAt); wait != 32*time.Second {
		t.Errorf("back-off after 3 throttled failures: %s, want 32s", wait)
	}
	be.Fail(nil)
	clk.Add(time.Hour)
	if _, err := p.Status(ctx, []backends.JobID{id}, 0); err != nil {
		t.Fatal(err)
	}
	if !p.Cached().RateLimitedSince.IsZero() || !strings.Contains(logged.String(), "answers tether's queries again") {
		t.Errorf("the throttling is not cleared after a good answer:\n%s", logged.String())
	}
	for _, c := range []struct {
		err  error
		want bool
	}{
		{errors.New("slurm_load_jobs error: Rate limit exceeded"), true},
		{errors.New("slurmrestd answered HTTP 429 Too Many Requests"), true},
		{errors.New("squeue: Socket timed out on send/recv operation"), false},
		{nil, false},
	} {
		if got := backends.RateLimited(c.err); got != c.want {
			t.Errorf("RateLimited(%v) = %v", c.err, got)
		}
	}
}

// slowBackend answers late: each query advances the clock by delay.
type slowBackend struct {
	backends.Backend
	clk   *clock
	delay time.Duration
	times []time.Time
}

func (b *slowBackend) Query(ctx context.Context, ids []backends.JobID) (map[backends.JobID]backends.JobStatus, error) {
	b.times = append(b.times, b.clk.Now())
	b.clk.Add(b.delay)
	return b.Backend.Query(ctx, ids)
}

// Slurm 24.11's RPC rate limiting answers a throttled client late, not
// with an error (measured: 10 to 20 s for squeue and jobs/state as a
// non-root user). A slow answer is taken for throttling: said once, the
// next query waits three times as long as the answer took, and a quick
// answer ends it.
func TestPollerBacksOffAfterASlowAnswer(t *testing.T) {
	clk := &clock{t: time.Unix(1e9, 0)}
	be := &slowBackend{Backend: fake.New(), clk: clk, delay: 10 * time.Second}
	p, _ := newPoller(t, be, clk)
	var logged strings.Builder
	p.Log = slog.New(slog.NewTextHandler(&logged, nil))
	id, _ := be.Submit(context.Background(), backends.JobRequest{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// callers asking every second for 3 minutes
	for range 180 {
		p.Status(ctx, []backends.JobID{id}, time.Second)
		clk.Add(time.Second)
	}
	for i := 1; i < len(be.times); i++ {
		if gap := be.times[i].Sub(be.times[i-1]); gap < 10*time.Second+30*time.Second {
			t.Errorf("query %d started %s after the one before, which took 10s: want 40s or more", i, gap)
		}
	}
	if n := strings.Count(logged.String(), "slow to answer"); n != 1 {
		t.Errorf("said %d times that the scheduler is slow, want once:\n%s", n, logged.String())
	}
	if p.Cached().RateLimitedSince.IsZero() {
		t.Error("the snapshot does not record the throttling")
	}
	be.delay = 10 * time.Millisecond
	clk.Add(time.Minute)
	if _, err := p.Status(ctx, []backends.JobID{id}, time.Second); err != nil {
		t.Fatal(err)
	}
	if !p.Cached().RateLimitedSince.IsZero() || !strings.Contains(logged.String(), "answers tether's queries again") {
		t.Errorf("the throttling is not cleared after a quick answer:\n%s", logged.String())
	}
}

// The poll cache keeps each job's JSON while its status stays the same:
// over random snapshots, each saved after the one before, the file is
// always what json.Marshal writes (in another field order).
func TestPollerEncodeKeepsJobsJSON(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("TETHER_SEED"); v != "" {
		seed, _ = strconv.ParseUint(v, 10, 64)
	}
	t.Logf("seed %d (replay: TETHER_SEED=%d)", seed, seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	states := []backends.State{backends.Pending, backends.Running, backends.Completed, backends.Failed}
	t0 := time.Unix(2e9, 0).UTC()
	p := &Poller{}
	jobs := map[backends.JobID]backends.JobStatus{}
	for round := range 50 {
		for range rng.IntN(20) {
			id := backends.JobID(strconv.Itoa(rng.IntN(40)))
			if rng.IntN(5) == 0 {
				delete(jobs, id)
				continue
			}
			st := jobs[id]
			st.ID, st.State = id, states[rng.IntN(len(states))]
			switch rng.IntN(4) {
			case 0:
				c := rng.IntN(3)
				st.ExitCode = &c
			case 1:
				st.Nodes = []string{"n" + strconv.Itoa(rng.IntN(3))}
			case 2:
				st.Start = t0.Add(time.Duration(rng.IntN(100)) * time.Second)
			case 3:
				st.Reason = `"quoted" <` + strconv.Itoa(rng.IntN(3)) + ">"
			}
			jobs[id] = st
		}
		snap := &Snapshot{V: cacheVersion, At: t0.Add(time.Duration(round) * time.Second), Jobs: maps.Clone(jobs)}
		got, err := p.encode(snap)
		if err != nil {
			t.Fatal(err)
		}
		want, _ := json.Marshal(snap)
		var g, w any
		if err := json.Unmarshal(got, &g); err != nil {
			t.Fatalf("round %d: %v in %s", round, err, got)
		}
		json.Unmarshal(want, &w)
		if !reflect.DeepEqual(g, w) {
			t.Fatalf("round %d: encode\n%s\nwant json.Marshal\n%s", round, got, want)
		}
		if !bytes.Equal(got, want) { // the same bytes, jobs in json.Marshal's order too
			t.Fatalf("round %d: encode\n%s\nis not json.Marshal's bytes\n%s", round, got, want)
		}
	}
}

// JobStatus.Equal sees a change of every field (a field added later and
// left out of Equal fails here).
func TestJobStatusEqualEveryField(t *testing.T) {
	base := backends.JobStatus{}
	v := reflect.ValueOf(&base).Elem()
	for i := range v.NumField() {
		o := base
		f := reflect.ValueOf(&o).Elem().Field(i)
		switch f.Kind() {
		case reflect.String:
			f.SetString("x")
		case reflect.Int, reflect.Int64:
			f.SetInt(1)
		case reflect.Pointer:
			f.Set(reflect.New(f.Type().Elem()))
		case reflect.Slice:
			f.Set(reflect.MakeSlice(f.Type(), 1, 1))
		case reflect.Struct:
			if f.Type() == reflect.TypeOf(time.Time{}) {
				f.Set(reflect.ValueOf(time.Unix(1, 0)))
			} else {
				f.Field(0).SetInt(1)
			}
		default:
			t.Fatalf("field %s: kind %s not covered by this test", v.Type().Field(i).Name, f.Kind())
		}
		if base.Equal(o) || o.Equal(base) {
			t.Errorf("Equal misses a change of %s", v.Type().Field(i).Name)
		}
	}
}
