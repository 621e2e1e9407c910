package rundir

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/tether-hpc/tether/schema"
)

// Row is one run as `tether list` shows it.
type Row struct {
	RunID    string
	Name     string
	Site     string
	JobID    string
	Attempts int
	Key      string
	Created  time.Time
	// Outcome is the outcome word of a decided run ("" while it lives);
	// Decided when it was decided.
	Outcome string
	Decided time.Time
	// Element: an array element's run (listed through its array).
	Element bool
	// Broken: run.json could not be read.
	Broken bool
}

// The listing cache: index/list.tsv holds the rows of decided runs, so a
// listing reads one file and one directory instead of every run's record.
// Every write that can change a decided run's row (Save, WriteOutcome,
// ArchiveOutcome, RestoreOutcome, ClearActive) leaves a
// marker index/changed/<run id> AFTER the write, and a listing removes a
// marker BEFORE it reads that run again, so a change is never missed: a
// write after the removal leaves a new marker. Runs in the active index,
// runs with a marker, and runs the cache does not know are always read
// from their own files; runs gone from runs/ drop out.
const listCacheHeader = "tether-list-cache v2"

var elementID = regexp.MustCompile(`\.[0-9]+$`)

func (s *Store) indexDir() string   { return filepath.Join(s.Dir, "index") }
func (s *Store) listCache() string  { return filepath.Join(s.indexDir(), "list.tsv") }
func (s *Store) changedDir() string { return filepath.Join(s.indexDir(), "changed") }

// markChanged leaves the marker of a run whose row may have changed (see
// the listing cache). A run outside a store's runs/ has none.
func markChanged(runDir, id string) {
	runs := filepath.Dir(runDir)
	if filepath.Base(runs) != "runs" {
		return
	}
	dir := filepath.Join(filepath.Dir(runs), "index", "changed")
	p := filepath.Join(dir, id)
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if errors.Is(err, os.ErrNotExist) {
		if os.MkdirAll(dir, 0o700) == nil {
			f, err = os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
		}
	}
	if err == nil {
		f.Close()
	}
}

// ForgetRows drops runs' rows from the listing cache and their markers
// (pruning); it waits for the cache's lock.
func (s *Store) ForgetRows(ids map[string]bool) error {
	l, err := LockFile(context.Background(), filepath.Join(s.indexDir(), "list.lock"))
	if err != nil {
		return err
	}
	defer l.Unlock()
	c, ok := s.readListCache()
	if !ok {
		return nil // rebuilt by the next listing
	}
	kept := c.rows[:0]
	for _, r := range c.rows {
		if !ids[r.RunID] {
			kept = append(kept, r)
		}
	}
	for id := range ids {
		os.Remove(filepath.Join(s.changedDir(), id))
	}
	c.rows = kept
	return s.writeListCache(c)
}

// Rows lists every run of the store (array elements marked, not left
// out), oldest first.
//
// The cache holds a row for every run; rows of runs that are not decided,
// are in the active index or have a marker are read again from the runs'
// own files. runs/ itself is read (100,000 entries cost tens of ms) only
// when it may have changed since the cache was written: the cache records
// the directory's inode and mtime, taken before it was read, and the fast
// path is taken only when both are unchanged and the mtime was at least
// ClockSlack older than that read (so a run created within a coarse
// mtime's granule of the read is never missed).
func (s *Store) Rows() ([]Row, error) {
	runsDir := filepath.Join(s.Dir, "runs")
	dirFi, err := os.Stat(runsDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	active, err := s.ActiveNames()
	if err != nil {
		return nil, err
	}
	live := make(map[string]bool, len(active))
	for _, id := range active {
		live[id] = true
	}
	_ = os.MkdirAll(s.indexDir(), s.modes().Dir)
	lock, owner, _ := TryLockFile(filepath.Join(s.indexDir(), "list.lock"))
	if owner {
		defer lock.Unlock()
	}
	// markers: taken (removed) only by the lock's owner, before the runs
	// are read again
	marked := map[string]bool{}
	if ms, err := os.ReadDir(s.changedDir()); err == nil {
		for _, m := range ms {
			marked[m.Name()] = true
			if owner {
				os.Remove(filepath.Join(s.changedDir(), m.Name()))
			}
		}
	}
	cache, ok := s.readListCache()
	dirty := !ok
	listedAt := time.Now()
	// fast: runs/ is as it was, so the cache's runs are all the runs
	fast := ok && cache.dirIno == inode(dirFi) && cache.dirMod == dirFi.ModTime().UnixNano() &&
		time.Unix(0, cache.dirMod).Before(time.Unix(0, cache.listedAt).Add(-ClockSlack))
	var ids []string
	var known map[string]int
	if fast {
		listedAt = time.Unix(0, cache.listedAt)
	} else {
		ents, err := os.ReadDir(runsDir)
		if err != nil {
			return nil, err
		}
		ids = make([]string, 0, len(ents))
		for _, e := range ents {
			if e.IsDir() && !strings.HasPrefix(e.Name(), ".") {
				ids = append(ids, e.Name())
			}
		}
		known = make(map[string]int, len(cache.rows))
		for i := range cache.rows {
			known[cache.rows[i].RunID] = i
		}
		dirty = true
	}
	n := len(ids)
	if fast {
		n = len(cache.rows)
	}
	var present map[string]bool // the slow path's ids, for elements
	isElement := func(id string) bool {
		if !elementID.MatchString(id) {
			return false
		}
		parent := elementID.ReplaceAllString(id, "")
		if !fast {
			if present == nil {
				present = make(map[string]bool, len(ids))
				for _, id := range ids {
					present[id] = true
				}
			}
			return present[parent]
		}
		_, err := os.Stat(filepath.Join(runsDir, parent))
		return err == nil
	}
	// the fast path fills the cache's own slice in place
	out := cache.rows[:0:0]
	if fast {
		out = cache.rows[:0]
	} else {
		out = make([]Row, 0, n)
	}
	for k := range n {
		var id string
		i, had := k, fast
		if fast {
			id = cache.rows[k].RunID
		} else {
			id = ids[k]
			i, had = known[id]
		}
		if had && !live[id] && !marked[id] && (cache.rows[i].Outcome != "" || cache.rows[i].Element && (fast || isElement(id))) {
			out = append(out, cache.rows[i]) // in place on the fast path (k == i, len(out) == k)
			continue
		}
		var r Row
		if isElement(id) {
			r = Row{RunID: id, Element: true}
		} else {
			r = s.readRow(id)
		}
		if !had || !r.same(cache.rows[i]) {
			dirty = true
		}
		out = append(out, r)
	}
	less := func(i, j int) bool {
		if !out[i].Created.Equal(out[j].Created) {
			return out[i].Created.Before(out[j].Created)
		}
		return out[i].RunID < out[j].RunID
	}
	if !sort.SliceIsSorted(out, less) {
		sort.SliceStable(out, less)
	}
	if owner && dirty {
		// only slower next time when this fails; the listing is right
		_ = s.writeListCache(listCacheFile{dirIno: inode(dirFi), dirMod: dirFi.ModTime().UnixNano(), listedAt: listedAt.UnixNano(), rows: out})
	}
	return out, nil
}

// same reports whether two rows say the same (times compared as instants).
func (r Row) same(o Row) bool {
	a, b := r, o
	a.Created, a.Decided, b.Created, b.Decided = time.Time{}, time.Time{}, time.Time{}, time.Time{}
	return a == b && r.Created.Equal(o.Created) && r.Decided.Equal(o.Decided)
}

func inode(fi os.FileInfo) uint64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Ino
	}
	return 0
}

// readRow reads one run's row from its own files.
func (s *Store) readRow(id string) Row {
	run := s.Run(id)
	rec, err := run.Load()
	if err != nil {
		return Row{RunID: id, Broken: true, Name: "?", JobID: "?"}
	}
	r := Row{RunID: id, Name: rec.Task.Name, Site: rec.Site, Attempts: len(rec.Attempts), Key: rec.Key,
		Created: rec.CreatedAt, JobID: rec.JobLabel(), Element: rec.Element != nil}
	if o, done, err := run.Outcome(); err == nil && done {
		r.Outcome = o.Outcome
		if o.DecidedAt != nil {
			r.Decided = *o.DecidedAt
		} else if fi, err := os.Stat(run.OutcomeFile()); err == nil {
			r.Decided = fi.ModTime()
		}
	}
	return r
}

// listCacheFile is index/list.tsv: a header line with the runs
// directory's inode and mtime and when it was read, then one row per run.
type listCacheFile struct {
	dirIno           uint64
	dirMod, listedAt int64
	rows             []Row
}

func (s *Store) readListCache() (listCacheFile, bool) {
	b, err := os.ReadFile(s.listCache())
	if err != nil {
		return listCacheFile{}, false
	}
	head, body, _ := bytes.Cut(b, []byte{'\n'})
	var c listCacheFile
	if n, err := fmt.Sscanf(string(head), listCacheHeader+" %d %d %d", &c.dirIno, &c.dirMod, &c.listedAt); err != nil || n != 3 {
		return listCacheFile{}, false
	}
	c.rows = make([]Row, 0, bytes.Count(body, []byte{'\n'}))
	text := string(body) // one copy; the rows' strings share it
	for len(text) > 0 {
		var line string
		line, text, _ = strings.Cut(text, "\n")
		r, ok := parseRow(line)
		if !ok {
			return listCacheFile{}, false // damaged: rebuilt from the runs
		}
		c.rows = append(c.rows, r)
	}
	return c, true
}

// A row is tab-separated: id, name, site, job, attempts, created and
// decided (Unix ns), outcome, flags (e element, b broken), key (quoted).
func parseRow(line string) (Row, bool) {
	var f [10]string
	for i := range 9 {
		var ok bool
		f[i], line, ok = strings.Cut(line, "\t")
		if !ok {
			return Row{}, false
		}
	}
	f[9] = line
	att, err1 := strconv.Atoi(f[4])
	cr, err2 := strconv.ParseInt(f[5], 10, 64)
	de, err3 := strconv.ParseInt(f[6], 10, 64)
	if err1 != nil || err2 != nil || err3 != nil || !ValidRunID(f[0]) {
		return Row{}, false
	}
	key := ""
	if f[9] != `""` {
		var err error
		if key, err = strconv.Unquote(f[9]); err != nil {
			return Row{}, false
		}
	}
	r := Row{RunID: f[0], Name: f[1], Site: f[2], JobID: f[3], Attempts: att, Outcome: f[7],
		Element: strings.Contains(f[8], "e"), Broken: strings.Contains(f[8], "b"), Key: key}
	if cr != 0 {
		r.Created = time.Unix(0, cr)
	}
	if de != 0 {
		r.Decided = time.Unix(0, de)
	}
	return r, true
}

func (s *Store) writeListCache(c listCacheFile) error {
	buf := make([]byte, 0, len(c.rows)*128+64)
	buf = fmt.Appendf(buf, "%s %d %d %d\n", listCacheHeader, c.dirIno, c.dirMod, c.listedAt)
	clean := func(v string) string {
		if strings.ContainsAny(v, "\t\n") {
			return strings.NewReplacer("\t", " ", "\n", " ").Replace(v)
		}
		return v
	}
	for _, r := range c.rows {
		flags := "-"
		if r.Element {
			flags = "e"
		}
		if r.Broken {
			flags += "b"
		}
		buf = append(buf, r.RunID...)
		for _, v := range []string{clean(r.Name), clean(r.Site), clean(r.JobID)} {
			buf = append(append(buf, '\t'), v...)
		}
		buf = append(buf, '\t')
		buf = strconv.AppendInt(buf, int64(r.Attempts), 10)
		buf = append(buf, '\t')
		buf = strconv.AppendInt(buf, nanos(r.Created), 10)
		buf = append(buf, '\t')
		buf = strconv.AppendInt(buf, nanos(r.Decided), 10)
		buf = append(append(append(buf, '\t'), clean(r.Outcome)...), '\t')
		buf = append(append(buf, flags...), '\t')
		buf = strconv.AppendQuote(buf, r.Key)
		buf = append(buf, '\n')
	}
	return WriteFileReplace(s.listCache(), buf, s.modes().File)
}

func nanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

// Prune removes a decided run's directory (an array run's with its
// elements'), its key binding when the key still points at it, and its
// listing row. It re-checks under the run's lock that the run is decided
// and not active; a run that is live, undecided or locked by someone is
// left alone (removed false, with the reason).
func (s *Store) Prune(ctx context.Context, id string) (removed bool, why string, err error) {
	run := s.Run(id)
	lock, ok, err := TryLockFile(run.LockFile())
	if err != nil {
		return false, "", err
	}
	if !ok {
		return false, "in use (its lock is held)", nil
	}
	defer lock.Unlock()
	if _, err := os.Stat(filepath.Join(s.ActiveDir(), id)); err == nil {
		return false, "active", nil
	}
	if _, done, err := run.Outcome(); err != nil || !done {
		return false, "not decided", err
	}
	rec, err := run.Load()
	if err != nil {
		return false, "", err
	}
	gone := map[string]bool{id: true}
	var dirs []string
	if rec.Array != nil || rec.Task.Array.Enabled() {
		for i := range rec.Task.Array.Size() {
			el := s.Run(schema.ElementRunID(id, i))
			if _, err := os.Stat(filepath.Join(s.ActiveDir(), el.ID)); err == nil {
				return false, "element " + el.ID + " is active", nil
			}
			dirs = append(dirs, el.Dir)
			gone[el.ID] = true
		}
	}
	if rec.Key != "" {
		kl, err := s.KeyLock(ctx, rec.Key)
		if err != nil {
			return false, "", err
		}
		if bound, ok, _ := s.LookupKey(rec.Key); ok && bound == id {
			err = s.UnbindKey(rec.Key)
		}
		kl.Unlock()
		if err != nil {
			return false, "", err
		}
	}
	// renamed out of runs/ first: a half-removed run never looks like one
	for _, d := range append(dirs, run.Dir) {
		trash := filepath.Join(filepath.Dir(d), ".pruned-"+filepath.Base(d))
		if err := os.Rename(d, trash); err != nil {
			if errors.Is(err, os.ErrNotExist) {
				continue
			}
			return false, "", err
		}
		if err := os.RemoveAll(trash); err != nil {
			return true, "", err
		}
	}
	return true, "", s.ForgetRows(gone)
}
