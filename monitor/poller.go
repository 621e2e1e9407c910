package monitor

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/tether-hpc/tether/backends"
	"github.com/tether-hpc/tether/rundir"
)

// cacheVersion is the format of poll/cache.json (2: a sliding window of
// query start times replaced the fixed per-minute window; 3: Ended).
const cacheVersion = 3

// Snapshot is the site's last scheduler query, shared by every tether
// process on the site through <state>/poll/cache.json.
type Snapshot struct {
	V  int       `json:"v"`
	At time.Time `json:"at"` // when the last successful query returned
	// Jobs holds the status of every job the query covered.
	Jobs map[backends.JobID]backends.JobStatus `json:"jobs"`
	// Missing holds jobs the scheduler no longer knew, since when.
	Missing map[backends.JobID]time.Time `json:"missing"`
	// Ended holds, for jobs in a terminal state, the answer that first
	// showed them ended (so evidence waits count scheduler time).
	Ended map[backends.JobID]time.Time `json:"ended,omitempty"`
	// LastQuery is when any query was last started (rate limiting).
	LastQuery time.Time `json:"last_query"`
	// Err and ErrAt describe the latest failed query, cleared on success.
	Err string `json:"err,omitempty"`
	// AuthErr: the failure was the scheduler refusing tether's credentials.
	AuthErr  bool      `json:"auth_err,omitempty"`
	ErrAt    time.Time `json:"err_at,omitempty"`
	Failures int       `json:"failures,omitempty"`
	// RateLimitedSince: the scheduler has been throttling the site's
	// queries since then (cleared by a good answer); tether backs off
	// harder and says so once.
	RateLimitedSince time.Time `json:"rate_limited_since,omitempty"`
	// Took is how long the latest good answer took. A slow one (SlowAnswer
	// or more) is the scheduler throttling too: Slurm 23.02+'s RPC rate
	// limiting (rl_enable) answers a throttled client late rather than
	// with an error, and an overloaded slurmctld is slow for everyone.
	Took         time.Duration `json:"took,omitempty"`
	QueriesTotal int64         `json:"queries_total"`
	// Recent holds the start times of the queries of the last minute, for
	// the site's per-minute cap (a sliding window: no 60 s span ever
	// holds more than the cap).
	Recent []time.Time `json:"recent,omitempty"`
}

// recentSince returns the query start times after t.
func (s *Snapshot) recentSince(t time.Time) []time.Time {
	out := s.Recent[:0:0]
	for _, q := range s.Recent {
		if q.After(t) {
			out = append(out, q)
		}
	}
	return out
}

// covers reports whether the snapshot knows every id.
func (s *Snapshot) covers(ids []backends.JobID) bool {
	for _, id := range ids {
		_, ok := s.Jobs[id]
		_, gone := s.Missing[id]
		if !ok && !gone {
			return false
		}
	}
	return true
}

// DefaultSlowAnswer: slurmctld answers a status query in milliseconds;
// a throttled client of Slurm 24.11 waited 10 to 20 s (rl_refill_period
// 10 s on the 24.11 test cluster).
const DefaultSlowAnswer = 5 * time.Second

// slowFactor: after a slow answer, the next query waits this many times
// as long as the answer took.
const slowFactor = 3

// ErrQuery wraps a failed scheduler query; the snapshot still holds the
// last good answer.
var ErrQuery = errors.New("scheduler query failed")

// Poller runs the site's batched scheduler query. All processes on a site
// share its result: a query is made only when the cached one is older than
// the caller accepts, at most once per MinInterval and at most
// MaxPerMinute times a minute, and it covers every active job of the site.
type Poller struct {
	// Site names the site whose runs the query covers (its cache file).
	Site         string
	Store        *rundir.Store
	Backend      backends.Backend
	MinInterval  time.Duration
	MaxPerMinute int
	Now          func() time.Time
	Log          *slog.Logger // nil: quiet
	// Complete: the ids given are every active job of the site (the
	// monitor knows them), so the active index is not read again.
	Complete bool
	// SlowAnswer is how long an answer may take before tether takes it
	// for throttling and leaves SlowFactor times as long between queries
	// (0: DefaultSlowAnswer).
	SlowAnswer time.Duration

	mu     sync.Mutex
	last   Snapshot
	lastFi os.FileInfo
	// the last save's bytes, the jobs they were encoded from (encIDs
	// sorted, as they are in the bytes) and where each job's JSON
	// ("id":{...}) is in them (encSpan[i] for encIDs[i]; encNext is the
	// slice the next save fills): a job whose status did not change is
	// copied, not encoded again (most of a site's jobs, most cycles), and
	// the cache holds no second copy of the file
	enc              []byte
	encJobs          map[backends.JobID]backends.JobStatus
	encIDs           []backends.JobID
	encSpan, encNext [][2]int32
}

func (p *Poller) dir() string { return filepath.Join(p.Store.Dir, "poll") }
func (p *Poller) cachePath() string {
	if p.Site == "" {
		return filepath.Join(p.dir(), "cache.json")
	}
	return filepath.Join(p.dir(), "cache-"+p.Site+".json")
}

// Cached returns the shared snapshot without querying. The file is
// decoded again only when it changed; callers treat the maps as read-only.
// The file is keyed by inode as well as mtime and size: every save renames
// a new file in, so a change shows even where mtimes are coarse (Lustre).
func (p *Poller) Cached() Snapshot {
	fi, err := os.Stat(p.cachePath())
	if err != nil {
		return Snapshot{V: cacheVersion}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.last.V == cacheVersion && p.lastFi != nil && os.SameFile(fi, p.lastFi) &&
		fi.ModTime().Equal(p.lastFi.ModTime()) && fi.Size() == p.lastFi.Size() {
		return p.last
	}
	var s Snapshot
	if err := rundir.ReadJSON(p.cachePath(), &s); err != nil || s.V != cacheVersion {
		return Snapshot{V: cacheVersion}
	}
	p.last, p.lastFi = s, fi
	return s
}

// Status returns a snapshot that covers ids and is at most maxAge old,
// querying the scheduler when needed (maxAge 0 asks for a new query, still
// subject to the site's rate limits). A failed query returns the last
// snapshot together with an error wrapping ErrQuery.
func (p *Poller) Status(ctx context.Context, ids []backends.JobID, maxAge time.Duration) (Snapshot, error) {
	if snap := p.Cached(); p.answers(snap, ids, maxAge) {
		return snap, nil
	}
	if err := os.MkdirAll(p.dir(), p.Store.Modes.Dir|0o700); err != nil {
		return p.Cached(), fmt.Errorf("%w: %w", rundir.ErrStateDir, err)
	}
	lock, err := rundir.LockFile(ctx, strings.TrimSuffix(p.cachePath(), ".json")+".lock")
	if err != nil {
		return p.Cached(), err
	}
	defer lock.Unlock()
	// Another process may have queried while this one waited for the lock.
	snap := p.Cached()
	if p.answers(snap, ids, maxAge) {
		return snap, nil
	}
	now, ask, err := p.waitTurn(ctx, &snap, ids)
	if !ask {
		return snap, err
	}
	return p.query(ctx, snap, ids, now)
}

// answers: the shared snapshot covers ids, is fresh enough, and is not a
// failure.
func (p *Poller) answers(snap Snapshot, ids []backends.JobID, maxAge time.Duration) bool {
	return snap.covers(ids) && maxAge > 0 && p.Now().Sub(snap.At) <= maxAge && snap.Err == ""
}

// waitTurn applies the site's rate limits (spacing, back-off, the
// per-minute cap): it waits for the next allowed query and returns its
// time with ask set, or, without ask, the snapshot's own error when the
// snapshot already covers ids or a failure is too recent to ask again.
func (p *Poller) waitTurn(ctx context.Context, snap *Snapshot, ids []backends.JobID) (now time.Time, ask bool, err error) {
	now = p.Now()
	wait := p.spacing(snap, now)
	if wait <= 0 {
		return now, true, nil
	}
	if snap.covers(ids) || snap.Err != "" && now.Sub(snap.ErrAt) < p.MinInterval {
		return now, false, snapErr(*snap)
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return now, false, ctx.Err()
	case <-t.C:
	}
	return p.Now(), true, nil
}

// query asks the scheduler about every active job of the site (one
// batched query), updates the snapshot's bookkeeping and saves it.
func (p *Poller) query(ctx context.Context, snap Snapshot, ids []backends.JobID, now time.Time) (Snapshot, error) {
	all, err := p.activeIDs(ids)
	if err != nil {
		return snap, err
	}
	snap.LastQuery = now
	snap.Recent = append(snap.recentSince(now.Add(-time.Minute)), now)
	snap.QueriesTotal++
	jobs, qerr := p.Backend.Query(ctx, all)
	done := p.Now()
	if qerr != nil {
		snap.Err, snap.ErrAt, snap.AuthErr = qerr.Error(), done, errors.Is(qerr, backends.ErrAuth)
		snap.Failures++
		if backends.RateLimited(qerr) && snap.RateLimitedSince.IsZero() {
			snap.RateLimitedSince = done
			if p.Log != nil {
				p.Log.Warn("the scheduler is rate-limiting tether's queries; backing off", "site", p.Site, "err", qerr)
			}
		}
		if werr := p.save(&snap); werr != nil {
			return snap, errors.Join(fmt.Errorf("%w: %w", ErrQuery, qerr), werr)
		}
		return snap, fmt.Errorf("%w: %w", ErrQuery, qerr)
	}
	snap.Missing = missingSince(snap, all, jobs, done)
	snap.Ended = endedSince(snap, jobs, done)
	snap.Jobs = jobs
	snap.Took = done.Sub(now)
	throttledSince := snap.RateLimitedSince
	switch slow := snap.Took >= p.slowAnswer(); {
	case slow && throttledSince.IsZero():
		throttledSince = done
		if p.Log != nil {
			p.Log.Warn("the scheduler was slow to answer tether's query (throttled by slurmctld's RPC rate limiting, rl_enable, or overloaded); backing off",
				"site", p.Site, "took", snap.Took.Round(100*time.Millisecond), "next_query_after", (slowFactor * snap.Took).Round(time.Second))
		}
	case !slow && !throttledSince.IsZero():
		if p.Log != nil {
			p.Log.Info("the scheduler answers tether's queries again", "site", p.Site, "throttled_for", done.Sub(throttledSince).Round(time.Second))
		}
		throttledSince = time.Time{}
	}
	snap.At, snap.Err, snap.ErrAt, snap.Failures, snap.AuthErr, snap.RateLimitedSince = done, "", time.Time{}, 0, false, throttledSince
	return snap, p.save(&snap)
}

// missingSince: since when each asked-for job the answer lacks has been
// missing (a job keeps the time of its first absence).
func missingSince(prev Snapshot, asked []backends.JobID, jobs map[backends.JobID]backends.JobStatus, at time.Time) map[backends.JobID]time.Time {
	missing := map[backends.JobID]time.Time{}
	for _, id := range asked {
		if _, ok := jobs[id]; ok {
			continue
		}
		since, was := prev.Missing[id]
		if !was {
			since = at
		}
		missing[id] = since
	}
	return missing
}

// endedSince: since when each job in a terminal state has been in it.
func endedSince(prev Snapshot, jobs map[backends.JobID]backends.JobStatus, at time.Time) map[backends.JobID]time.Time {
	ended := map[backends.JobID]time.Time{}
	for id, js := range jobs {
		if !js.State.Terminal() {
			continue
		}
		since, was := prev.Ended[id]
		if !was || prev.Jobs[id].State != js.State {
			since = at
		}
		ended[id] = since
	}
	return ended
}

// spacing is how long to wait before the next query may start.
func (p *Poller) spacing(s *Snapshot, now time.Time) time.Duration {
	wait := s.LastQuery.Add(p.MinInterval).Sub(now)
	if s.Failures > 0 { // back off while the scheduler is failing
		n := s.Failures
		if !s.RateLimitedSince.IsZero() {
			n += 2 // throttled: back off harder
		}
		back := p.MinInterval << min(n, 6)
		wait = max(wait, s.ErrAt.Add(back).Sub(now))
	}
	if s.Failures == 0 && s.Took >= p.slowAnswer() {
		// a slow answer: throttled, or a controller that is struggling
		wait = max(wait, s.At.Add(slowFactor*s.Took).Sub(now))
	}
	if recent := s.recentSince(now.Add(-time.Minute)); p.MaxPerMinute > 0 && len(recent) >= p.MaxPerMinute {
		// the query may start once the oldest counted one is a minute old
		wait = max(wait, recent[len(recent)-p.MaxPerMinute].Add(time.Minute).Sub(now))
	}
	return max(wait, 0)
}

func (p *Poller) slowAnswer() time.Duration {
	if p.SlowAnswer > 0 {
		return p.SlowAnswer
	}
	return DefaultSlowAnswer
}

func snapErr(s Snapshot) error {
	if s.Err != "" && s.AuthErr {
		return fmt.Errorf("%w: %w: %s", ErrQuery, backends.ErrAuth, s.Err)
	}
	if s.Err != "" {
		return fmt.Errorf("%w: %s", ErrQuery, s.Err)
	}
	return nil
}

// activeIDs is every active job of the site plus the ids asked for.
func (p *Poller) activeIDs(ids []backends.JobID) ([]backends.JobID, error) {
	if p.Complete { // no index to merge: sorted, without repeats
		out := slices.Clone(ids)
		slices.Sort(out)
		return slices.Compact(out), nil
	}
	set := map[backends.JobID]bool{}
	for _, id := range ids {
		set[id] = true
	}
	if !p.Complete {
		active, err := p.Store.ActiveOf(p.Site)
		if err != nil {
			return nil, fmt.Errorf("read active runs: %w", err)
		}
		for _, j := range active {
			if j != "" {
				set[backends.JobID(j)] = true
			}
		}
	}
	out := make([]backends.JobID, 0, len(set))
	for id := range set {
		out = append(out, id)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out, nil
}

func (p *Poller) save(s *Snapshot) error {
	s.V = cacheVersion
	b, err := p.encode(s)
	if err != nil {
		return err
	}
	p.Store.Cut(p.cachePath())
	if err := rundir.WriteFileAtomic(p.cachePath(), b, p.Store.Modes.File|0o600); err != nil {
		return err
	}
	if fi, err := os.Stat(p.cachePath()); err == nil {
		p.mu.Lock()
		p.last, p.lastFi = *s, fi
		p.mu.Unlock()
	}
	return nil
}

// encode is json.Marshal(s) with each job's JSON kept from the last
// save while its status stays the same (Equal: a time that moved to
// another location keeps its old spelling of the same instant).
func (p *Poller) encode(s *Snapshot) ([]byte, error) {
	if s.Jobs == nil {
		return json.Marshal(s)
	}
	rest := *s
	rest.Jobs = nil
	head, err := json.Marshal(&rest)
	if err != nil {
		return nil, err
	}
	// the jobs go where "jobs":null is: the first such bytes are the field
	// itself (a string holding them would have its quotes escaped)
	at := bytes.Index(head, []byte(`"jobs":null`))
	if at < 0 {
		return nil, fmt.Errorf("poll cache: no jobs field in %.80s", head)
	}
	prev, ids := p.encIDs, p.encIDs // the same jobs as at the last save: already in order
	same := sameKeys(ids, s.Jobs)
	if !same {
		ids = make([]backends.JobID, 0, len(s.Jobs))
		for id := range s.Jobs {
			ids = append(ids, id)
		}
		slices.Sort(ids) // as json.Marshal orders a map
	}
	next := slices.Grow(p.encNext[:0], len(ids))[:len(ids)]
	out := make([]byte, 0, len(head)+len(p.enc)+64)
	out = append(out, head[:at+len(`"jobs":`)]...)
	out = append(out, '{')
	for i, id := range ids {
		if i > 0 {
			out = append(out, ',')
		}
		st := s.Jobs[id]
		start := len(out)
		j, ok := i, same
		if !same {
			j, ok = slices.BinarySearch(prev, id)
		}
		if ok && j < len(p.encSpan) {
			if old, had := p.encJobs[id]; had && old.Equal(st) {
				o := p.encSpan[j]
				out = append(out, p.enc[o[0]:o[1]]...)
				next[i] = [2]int32{int32(start), int32(len(out))}
				continue
			}
		}
		k, err := json.Marshal(string(id))
		if err != nil {
			return nil, err
		}
		v, err := json.Marshal(st)
		if err != nil {
			return nil, err
		}
		out = append(append(append(out, k...), ':'), v...)
		next[i] = [2]int32{int32(start), int32(len(out))}
	}
	out = append(out, '}')
	out = append(out, head[at+len(`"jobs":null`):]...)
	if len(out) > math.MaxInt32 {
		p.enc, p.encIDs, p.encSpan, p.encNext, p.encJobs = nil, nil, nil, nil, nil
		return out, nil
	}
	// out is written and kept, never changed: the next save copies from it
	p.enc, p.encIDs, p.encSpan, p.encNext = out, ids, next, p.encSpan
	p.encJobs = s.Jobs // read-only from here on, like every snapshot's maps
	return out, nil
}

// sameKeys: ids (distinct) are exactly m's keys.
func sameKeys(ids []backends.JobID, m map[backends.JobID]backends.JobStatus) bool {
	if len(ids) != len(m) {
		return false
	}
	for _, id := range ids {
		if _, ok := m[id]; !ok {
			return false
		}
	}
	return true
}
