package rundir

import (
	"bufio"
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
// A decided run's row changes only when the run is decided again (a key's
// run that starts a new generation); every write that can change it
// (WriteOutcome, ArchiveOutcome, RestoreOutcome, ClearActive) leaves a
// marker index/changed/<run id> AFTER the write, and a listing removes a
// marker BEFORE it reads that run again, so a change is never missed: a
// write after the removal leaves a new marker. Runs in the active index,
// runs with a marker, and runs the cache does not know are always read
// from their own files; runs gone from runs/ drop out.
const listCacheHeader = "tether-list-cache v1"

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
	rows, _ := s.readListCache()
	for id := range ids {
		delete(rows, id)
		os.Remove(filepath.Join(s.changedDir(), id))
	}
	return s.writeListCache(rows)
}

// Rows lists every run of the store (array elements marked, not left
// out), oldest first. fresh reads a run's row from its own files.
func (s *Store) Rows() ([]Row, error) {
	ents, err := os.ReadDir(filepath.Join(s.Dir, "runs"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	ids := make(map[string]bool, len(ents))
	for _, e := range ents {
		if e.IsDir() && !strings.HasPrefix(e.Name(), ".") {
			ids[e.Name()] = true
		}
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
	out := make([]Row, 0, len(ids))
	for id := range ids {
		if elementID.MatchString(id) && ids[elementID.ReplaceAllString(id, "")] {
			out = append(out, Row{RunID: id, Element: true})
			if _, had := cache[id]; had {
				delete(cache, id)
				dirty = true
			}
			continue
		}
		if r, had := cache[id]; had && !live[id] && !marked[id] {
			out = append(out, r)
			continue
		}
		r := s.readRow(id)
		out = append(out, r)
		switch {
		case r.Outcome != "" && !live[id] && !r.Broken:
			cache[id], dirty = r, true
		default:
			if _, had := cache[id]; had {
				delete(cache, id)
				dirty = true
			}
		}
	}
	for id := range cache {
		if !ids[id] {
			delete(cache, id)
			dirty = true
		}
	}
	if owner && dirty {
		if err := s.writeListCache(cache); err != nil {
			// only slower next time; the listing itself is right
			_ = err
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Created.Equal(out[j].Created) {
			return out[i].Created.Before(out[j].Created)
		}
		return out[i].RunID < out[j].RunID
	})
	return out, nil
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

func (s *Store) readListCache() (map[string]Row, bool) {
	b, err := os.ReadFile(s.listCache())
	if err != nil {
		return map[string]Row{}, false
	}
	head, body, _ := bytes.Cut(b, []byte{'\n'})
	if string(head) != listCacheHeader {
		return map[string]Row{}, false
	}
	rows := make(map[string]Row, bytes.Count(body, []byte{'\n'}))
	for len(body) > 0 {
		var line []byte
		line, body, _ = bytes.Cut(body, []byte{'\n'})
		r, ok := parseRow(string(line))
		if !ok {
			return map[string]Row{}, false // damaged: rebuilt from the runs
		}
		rows[r.RunID] = r
	}
	return rows, true
}

// A row is tab-separated: id, name, site, job, attempts, created and
// decided (Unix ns), outcome, element (0/1), key (quoted).
func parseRow(line string) (Row, bool) {
	f := strings.Split(line, "\t")
	if len(f) != 10 {
		return Row{}, false
	}
	att, err1 := strconv.Atoi(f[4])
	cr, err2 := strconv.ParseInt(f[5], 10, 64)
	de, err3 := strconv.ParseInt(f[6], 10, 64)
	key, err4 := strconv.Unquote(f[9])
	if err1 != nil || err2 != nil || err3 != nil || err4 != nil || !ValidRunID(f[0]) {
		return Row{}, false
	}
	r := Row{RunID: f[0], Name: f[1], Site: f[2], JobID: f[3], Attempts: att, Outcome: f[7], Element: f[8] == "1", Key: key}
	if cr != 0 {
		r.Created = time.Unix(0, cr)
	}
	if de != 0 {
		r.Decided = time.Unix(0, de)
	}
	return r, true
}

func (s *Store) writeListCache(rows map[string]Row) error {
	var buf bytes.Buffer
	buf.Grow(len(rows) * 128)
	w := bufio.NewWriter(&buf)
	fmt.Fprintln(w, listCacheHeader)
	clean := func(v string) string { return strings.NewReplacer("\t", " ", "\n", " ").Replace(v) }
	for _, r := range rows {
		el := "0"
		if r.Element {
			el = "1"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%d\t%d\t%d\t%s\t%s\t%s\n", r.RunID, clean(r.Name), clean(r.Site), clean(r.JobID), r.Attempts,
			nanos(r.Created), nanos(r.Decided), clean(r.Outcome), el, strconv.Quote(r.Key))
	}
	w.Flush()
	return WriteFileReplace(s.listCache(), buf.Bytes(), s.modes().File)
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
