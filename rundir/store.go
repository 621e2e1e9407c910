package rundir

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/tether-hpc/tether/schema"
)

// ErrNoRun is returned for a run id that has no run directory.
var ErrNoRun = errors.New("no such run")

// ErrStateDir marks a state directory that cannot be created or written.
var ErrStateDir = errors.New("state directory unusable")

// Store is a site's state directory.
type Store struct {
	Dir string
	// CutPoint, when set, is called before every write of a state file
	// (run.json, outcome.json, job scripts, the key and active indexes,
	// the poll cache) with the file's path. The fault simulation crashes
	// an actor there; nil in production.
	CutPoint func(path string)
	// Modes of the files and directories the store writes (the zero value
	// is private).
	Modes Modes
	// OnCreate, when set, is called after CreateRun wrote a run's first
	// record (the CLI keeps its site index with it).
	OnCreate func(rec *schema.RunRecord)
}

func (s *Store) modes() Modes {
	if s.Modes.File == 0 {
		return PrivateModes
	}
	return s.Modes
}

// Cut marks a cut point before a write of path (see CutPoint).
func (s *Store) Cut(path string) {
	if s.CutPoint != nil {
		s.CutPoint(path)
	}
}

// Open prepares a private state directory and checks that it is writable.
func Open(dir string) (*Store, error) { return OpenMode(dir, PrivateModes) }

// OpenMode is Open with the site's file modes.
func OpenMode(dir string, m Modes) (*Store, error) {
	if dir == "" {
		return nil, fmt.Errorf("%w: no path", ErrStateDir)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrStateDir, dir, err)
	}
	for _, sub := range []string{"runs", "keys", "active"} {
		if err := os.MkdirAll(filepath.Join(abs, sub), m.Dir); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrStateDir, err)
		}
	}
	probe, err := os.CreateTemp(abs, ".probe*")
	if err != nil {
		return nil, fmt.Errorf("%w: %s is not writable: %w", ErrStateDir, abs, err)
	}
	probe.Close()
	os.Remove(probe.Name())
	return &Store{Dir: abs, Modes: m}, nil
}

// ValidRunID reports whether s can be a run id (and so a directory name).
func ValidRunID(s string) bool { return schema.ValidName(s, 128) && !strings.Contains(s, "..") }

// NewRunID makes a sortable, unique run id: <name>-<UTC time>-<random>.
func NewRunID(name string, now time.Time) string {
	var b [3]byte
	rand.Read(b[:])
	return fmt.Sprintf("%s-%s-%s", name, now.UTC().Format("20060102T150405"), hex.EncodeToString(b[:]))
}

// Run returns the layout of one run directory.
func (s *Store) Run(id string) Run {
	return Run{Dir: filepath.Join(s.Dir, "runs", id), ID: id, cut: s.CutPoint, modes: s.modes()}
}

// Run is one run directory.
type Run struct {
	Dir   string
	ID    string
	cut   func(path string)
	modes Modes
}

// Modes are the run's file modes (private for a Run made by hand).
func (r Run) Modes() Modes {
	if r.modes.File == 0 {
		return PrivateModes
	}
	return r.modes
}

// Cut marks a cut point before a write of path (see Store.CutPoint).
func (r Run) Cut(path string) {
	if r.cut != nil {
		r.cut(path)
	}
}

func (r Run) RunJSON() string     { return filepath.Join(r.Dir, "run.json") }
func (r Run) Status() string      { return filepath.Join(r.Dir, "status.jsonl") }
func (r Run) OutcomeFile() string { return filepath.Join(r.Dir, "outcome.json") }
func (r Run) LockFile() string    { return filepath.Join(r.Dir, "lock") }
func (r Run) AttemptDir(n int) string {
	return filepath.Join(r.Dir, "attempts", strconv.Itoa(n))
}
func (r Run) Script(n int) string     { return filepath.Join(r.AttemptDir(n), "job.sh") }
func (r Run) TaskScript(n int) string { return filepath.Join(r.AttemptDir(n), "task.sh") }
func (r Run) Started(n int) string    { return filepath.Join(r.AttemptDir(n), "started") }
func (r Run) ExitCode(n int) string   { return filepath.Join(r.AttemptDir(n), "exitcode") }
func (r Run) Stdout(n int) string     { return filepath.Join(r.AttemptDir(n), "stdout") }
func (r Run) Stderr(n int) string     { return filepath.Join(r.AttemptDir(n), "stderr") }

// Lock takes the run's lock (submit and decide hold it).
func (r Run) Lock(ctx context.Context) (*Lock, error) {
	r.Cut(r.LockFile())
	return LockFile(ctx, r.LockFile())
}

// Load reads run.json.
func (r Run) Load() (*schema.RunRecord, error) {
	var rec schema.RunRecord
	if err := ReadJSON(r.RunJSON(), &rec); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("%w: %s", ErrNoRun, r.ID)
		}
		return nil, fmt.Errorf("read run %s: %w", r.ID, err)
	}
	if rec.V > schema.RunVersion {
		return nil, fmt.Errorf("run %s was written by a newer tether (run.json version %d)", r.ID, rec.V)
	}
	return &rec, nil
}

// Save writes run.json atomically.
func (r Run) Save(rec *schema.RunRecord) error {
	rec.V = schema.RunVersion
	r.Cut(r.RunJSON())
	if err := WriteJSONMode(r.RunJSON(), rec, r.Modes().File); err != nil {
		return err
	}
	markChanged(r.Dir, r.ID) // a decided run's record can change (usage, a late cancel)
	return nil
}

// WriteOutcome writes outcome.json atomically.
func (r Run) WriteOutcome(o *schema.Outcome) error {
	r.Cut(r.OutcomeFile())
	if err := WriteJSONMode(r.OutcomeFile(), o, r.Modes().File); err != nil {
		return err
	}
	markChanged(r.Dir, r.ID)
	return nil
}

// ArchiveOutcome moves outcome.json aside as outcome.<n>.json (a key's run
// starts a new generation) and returns the archive's path.
func (r Run) ArchiveOutcome(n int) (string, error) {
	archived := filepath.Join(r.Dir, fmt.Sprintf("outcome.%d.json", n))
	r.Cut(r.OutcomeFile())
	if err := os.Rename(r.OutcomeFile(), archived); err != nil {
		return "", fmt.Errorf("archive the previous outcome: %w", err)
	}
	markChanged(r.Dir, r.ID)
	return archived, nil
}

// RestoreOutcome undoes ArchiveOutcome.
func (r Run) RestoreOutcome(archived string) error {
	r.Cut(r.OutcomeFile())
	if err := os.Rename(archived, r.OutcomeFile()); err != nil {
		return err
	}
	markChanged(r.Dir, r.ID)
	return nil
}

// WriteScript writes one of an attempt's scripts (not synced: the
// scheduler reads it at submit).
func (r Run) WriteScript(path string, data []byte) error {
	r.Cut(path)
	return WriteFileReplace(path, data, r.Modes().Dir) // executable for the owner (and group)
}

// MkAttemptDir creates an attempt's directory with the run's mode, and
// its stdout and stderr files, so the scheduler appends to files of the
// right mode instead of creating them with the job's umask.
func (r Run) MkAttemptDir(n int) error {
	m := r.Modes()
	if err := os.MkdirAll(r.AttemptDir(n), m.Dir); err != nil {
		return fmt.Errorf("%w: %w", ErrStateDir, err)
	}
	for _, p := range []string{r.Stdout(n), r.Stderr(n)} {
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_APPEND, m.File)
		if err != nil {
			return fmt.Errorf("%w: %w", ErrStateDir, err)
		}
		f.Close()
	}
	return nil
}

// Outcome reads outcome.json; ok is false when the run is not decided.
func (r Run) Outcome() (*schema.Outcome, bool, error) {
	var o schema.Outcome
	err := ReadJSON(r.OutcomeFile(), &o)
	if errors.Is(err, os.ErrNotExist) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	return &o, true, nil
}

// ExitFile reads an attempt's exitcode file; ok is false when absent.
func (r Run) ExitFile(n int) (*schema.ExitFile, bool, error) {
	var e schema.ExitFile
	err := ReadJSON(r.ExitCode(n), &e)
	if errors.Is(err, os.ErrNotExist) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	return &e, true, nil
}

// StartedFile reads an attempt's started file; ok is false when absent.
func (r Run) StartedFile(n int) (*schema.Started, bool, error) {
	var s schema.Started
	err := ReadJSON(r.Started(n), &s)
	if errors.Is(err, os.ErrNotExist) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	return &s, true, nil
}

// PrepareRun makes a run's directory, its first attempt's directory
// and its status file, without run.json: an array element's files exist
// before its array is submitted, its record once its job id is known.
func (s *Store) PrepareRun(id string) (Run, error) {
	if !ValidRunID(id) {
		return Run{}, fmt.Errorf("invalid run id %q", id)
	}
	r := s.Run(id)
	s.Cut(r.Dir)
	if err := r.MkAttemptDir(1); err != nil {
		return Run{}, err
	}
	if f, err := os.OpenFile(r.Status(), os.O_WRONLY|os.O_CREATE|os.O_APPEND, s.modes().File); err == nil {
		f.Close()
	}
	return r, nil
}

// CreateRun makes the run directory and writes the first run.json.
func (s *Store) CreateRun(rec *schema.RunRecord) (Run, error) {
	if !ValidRunID(rec.RunID) {
		return Run{}, fmt.Errorf("invalid run id %q", rec.RunID)
	}
	r := s.Run(rec.RunID)
	s.Cut(r.Dir)
	m := s.modes()
	if err := os.MkdirAll(filepath.Join(r.Dir, "attempts"), m.Dir); err != nil {
		return Run{}, fmt.Errorf("%w: create run directory: %w", ErrStateDir, err)
	}
	// not synced: the first attempt's record, written next, is
	rec.V = schema.RunVersion
	b, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		return Run{}, err
	}
	if err := WriteFileReplace(r.RunJSON(), append(b, '\n'), m.File); err != nil {
		return Run{}, err
	}
	if s.OnCreate != nil {
		s.OnCreate(rec)
	}
	// the status file exists with the run's mode before a Task appends
	if f, err := os.OpenFile(r.Status(), os.O_WRONLY|os.O_CREATE|os.O_APPEND, m.File); err == nil {
		f.Close()
	}
	return r, nil
}

// Find resolves a run argument: a run id in this store, or a path to a run
// directory anywhere.
func (s *Store) Find(arg string) (Run, error) {
	if strings.ContainsRune(arg, os.PathSeparator) {
		abs, err := filepath.Abs(arg)
		if err != nil {
			return Run{}, err
		}
		r := Run{Dir: abs, ID: filepath.Base(abs), cut: s.CutPoint, modes: s.modes()}
		if _, err := os.Stat(r.RunJSON()); err != nil {
			return Run{}, fmt.Errorf("%w: %s has no run.json", ErrNoRun, arg)
		}
		return r, nil
	}
	if !ValidRunID(arg) {
		return Run{}, fmt.Errorf("%w: %q is not a run id", ErrNoRun, arg)
	}
	r := s.Run(arg)
	if _, err := os.Stat(r.RunJSON()); err != nil {
		return Run{}, fmt.Errorf("%w: %s (in %s)", ErrNoRun, arg, s.Dir)
	}
	return r, nil
}

// RemoveRun removes a run directory that never had a job.
func (s *Store) RemoveRun(r Run) error {
	s.Cut(r.Dir)
	return os.RemoveAll(r.Dir)
}

// ListRuns returns all run ids, oldest first.
func (s *Store) ListRuns() ([]string, error) {
	ents, err := os.ReadDir(filepath.Join(s.Dir, "runs"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	ids := make([]string, 0, len(ents))
	for _, e := range ents {
		if e.IsDir() && !strings.HasPrefix(e.Name(), ".") {
			ids = append(ids, e.Name())
		}
	}
	sort.Strings(ids)
	return ids, nil
}

func keyPath(dir, key string) string {
	h := sha256.Sum256([]byte(key))
	return filepath.Join(dir, "keys", hex.EncodeToString(h[:]))
}

// KeyLock serialises everything done under one idempotency key.
func (s *Store) KeyLock(ctx context.Context, key string) (*Lock, error) {
	return LockFile(ctx, keyPath(s.Dir, key)+".lock")
}

// LookupKey returns the run bound to key.
func (s *Store) LookupKey(key string) (string, bool, error) {
	b, err := os.ReadFile(keyPath(s.Dir, key))
	if errors.Is(err, os.ErrNotExist) {
		return "", false, nil
	}
	if err != nil {
		return "", false, err
	}
	id, _, _ := strings.Cut(string(b), "\n")
	if !ValidRunID(id) {
		return "", false, fmt.Errorf("key index entry for %q is damaged", key)
	}
	return id, true, nil
}

// BindKey binds key to a run id (callers hold KeyLock).
func (s *Store) BindKey(key, runID string) error {
	s.Cut(keyPath(s.Dir, key))
	return WriteFileAtomic(keyPath(s.Dir, key), []byte(runID+"\n"+key+"\n"), s.modes().File)
}

// UnbindKey frees a key (callers hold KeyLock).
func (s *Store) UnbindKey(key string) error {
	s.Cut(keyPath(s.Dir, key))
	err := os.Remove(keyPath(s.Dir, key))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}

// SetActive marks a run of a site active with its current job id.
func (s *Store) SetActive(runID, jobID, site string) error {
	s.Cut(filepath.Join(s.Dir, "active", runID))
	return WriteFileReplace(filepath.Join(s.Dir, "active", runID), []byte(jobID+"\n"+site+"\n"), s.modes().File)
}

// ClearActive marks a run no longer active.
func (s *Store) ClearActive(runID string) error {
	s.Cut(filepath.Join(s.Dir, "active", runID))
	err := os.Remove(filepath.Join(s.Dir, "active", runID))
	if errors.Is(err, os.ErrNotExist) {
		err = nil
	}
	if err == nil {
		markChanged(s.Run(runID).Dir, runID)
	}
	return err
}

// ActiveDir is the directory of the active index (watched by monitors).
func (s *Store) ActiveDir() string { return filepath.Join(s.Dir, "active") }

// ActiveNames lists the run ids of the active index without reading the
// entries (one directory read).
func (s *Store) ActiveNames() ([]string, error) {
	f, err := os.Open(s.ActiveDir())
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	names, err := f.Readdirnames(-1) // names only: a monitor reads this every cycle
	if err != nil {
		return nil, err
	}
	out := names[:0]
	for _, n := range names {
		if !strings.HasPrefix(n, ".") {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out, nil
}

// ActiveRun is an entry of the active index.
type ActiveRun struct {
	JobID string
	Site  string
}

// Active returns run id -> job id for every active run of a site (of
// every site when site is "").
func (s *Store) Active() (map[string]string, error) { return s.ActiveOf("") }

// ActiveOf returns run id -> job id for the active runs of one site. Two
// sites sharing a state directory (not recommended) stay apart.
func (s *Store) ActiveOf(site string) (map[string]string, error) {
	out := map[string]string{}
	err := s.eachActive(func(run, job, owner string) {
		if site == "" || (ActiveEntry{Job: job, Site: owner}).Of(site) {
			out[run] = job
		}
	})
	return out, err
}

// ActiveEntry is one active run's mark: its job id and the site that
// marked it ("" from a tether that did not record one).
type ActiveEntry struct{ Job, Site string }

// Of reports whether the mark belongs to site (a mark without a site
// belongs to every site).
func (a ActiveEntry) Of(site string) bool { return a.Site == "" || a.Site == site }

// ActiveEntries returns every active run's mark, of every site, from one
// read of the active index.
func (s *Store) ActiveEntries() (map[string]ActiveEntry, error) {
	out := map[string]ActiveEntry{}
	err := s.eachActive(func(run, job, owner string) { out[run] = ActiveEntry{Job: job, Site: owner} })
	return out, err
}

func (s *Store) eachActive(f func(run, job, owner string)) error {
	ents, err := os.ReadDir(s.ActiveDir())
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(s.ActiveDir(), e.Name()))
		if err != nil {
			continue // removed meanwhile
		}
		job, rest, _ := strings.Cut(string(b), "\n")
		f(e.Name(), strings.TrimSpace(job), strings.TrimSpace(rest))
	}
	return nil
}
