package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"github.com/tether-hpc/tether/rundir"
	"github.com/tether-hpc/tether/schema"
	siteconfigs "github.com/tether-hpc/tether/site-configs"
)

// indexDir is the user's site index: $TETHER_INDEX_DIR, else
// $XDG_STATE_HOME/tether/site-index, else ~/.local/state/tether/site-index.
func (a *app) indexDir() string {
	if d := a.getenv("TETHER_INDEX_DIR"); d != "" {
		return d
	}
	base := a.getenv("XDG_STATE_HOME")
	if base == "" || !filepath.IsAbs(base) {
		home := a.getenv("HOME")
		if home == "" {
			return ""
		}
		base = filepath.Join(home, ".local", "state")
	}
	return filepath.Join(base, "tether", "site-index")
}

func (a *app) siteIndex() *rundir.SiteIndex { return &rundir.SiteIndex{Dir: a.indexDir()} }

// indexRuns keeps the site index as a store creates runs (not array
// elements: RUN.i is found through RUN).
func (a *app) indexRuns(site *schema.Site, store *rundir.Store) {
	idx := a.siteIndex()
	file := site.File
	if file != "" {
		if abs, err := filepath.Abs(file); err == nil {
			file = abs
		}
	}
	store.OnCreate = func(rec *schema.RunRecord) {
		if rec.Element != nil {
			return
		}
		if err := idx.Put(rundir.IndexEntry{Site: site.Name, SiteFile: file, StateDir: store.Dir, RunID: rec.RunID, Key: rec.Key}); err != nil {
			a.log.Warn("could not update the site index (the run is still found by searching the sites)", "dir", idx.Dir, "err", err)
		}
	}
}

// siteFiles lists the site files on the search path (the embedded default
// left out).
func siteFiles() []string {
	var out []string
	seen := map[string]bool{}
	for _, d := range schema.SiteSearchPath() {
		var files []string
		for _, pat := range []string{"*.toml", "*/*.toml"} {
			m, _ := filepath.Glob(filepath.Join(d, pat))
			files = append(files, m...)
		}
		sort.Strings(files)
		for _, f := range files {
			if seen[f] || detectKind(f) != "site" {
				continue
			}
			if b, err := os.ReadFile(f); err == nil && bytes.Equal(b, siteconfigs.DefaultLocal) {
				continue
			}
			seen[f] = true
			out = append(out, f)
		}
	}
	return out
}

// lookup is how a run is asked for: by id or by key.
type lookup struct {
	id, key string
}

func (l lookup) String() string {
	if l.key != "" {
		return fmt.Sprintf("no run has key %q", l.key)
	}
	return "no such run: " + l.id
}

// elementSuffix is an array element's run id suffix (RUN.i).
var elementSuffix = regexp.MustCompile(`\.[0-9]+$`)

// in finds the run in one opened site (nil error and ok false when it is
// not there).
func (l lookup) in(s *session) (rundir.Run, bool, error) {
	id := l.id
	if l.key != "" {
		bound, ok, err := s.store.LookupKey(l.key)
		if err != nil || !ok {
			return rundir.Run{}, false, err
		}
		id = bound
	}
	run, err := s.store.Find(id)
	if errors.Is(err, rundir.ErrNoRun) {
		return rundir.Run{}, false, nil
	}
	return run, err == nil, err
}

// locate finds a run by id or key. With --site only that site is asked.
// Without it: the default site, then the site index, then every site on
// the search path; a run found on another site than the default says so
// on stderr, and the not-found error lists where it looked.
func (a *app) locate(l lookup) (*session, rundir.Run, error) {
	site, err := a.loadSite()
	if err != nil {
		return nil, rundir.Run{}, err
	}
	s, err := a.open(site)
	if err != nil {
		return nil, rundir.Run{}, err
	}
	run, ok, err := l.in(s)
	if err != nil {
		return nil, rundir.Run{}, err
	}
	if ok {
		return a.ownSite(s, run)
	}
	if a.siteArg != "" {
		return nil, rundir.Run{}, notFound{fmt.Sprintf("%s (in %s)", l, s.store.Dir)}
	}
	looked := []string{fmt.Sprintf("%s (%s)", site.Name, s.store.Dir)}
	tried := map[string]bool{site.Name + "\x00" + s.store.Dir: true}
	try := func(cand *schema.Site, how string) (*session, rundir.Run, bool) {
		dir, err := cand.ResolvedStateDir()
		if err != nil {
			return nil, rundir.Run{}, false
		}
		if abs, err := filepath.Abs(dir); err == nil {
			dir = abs
		}
		if tried[cand.Name+"\x00"+dir] {
			return nil, rundir.Run{}, false
		}
		tried[cand.Name+"\x00"+dir] = true
		looked = append(looked, fmt.Sprintf("%s (%s)", cand.Name, dir))
		if _, err := os.Stat(filepath.Join(dir, "runs")); err != nil {
			return nil, rundir.Run{}, false
		}
		cs, err := a.open(cand)
		if err != nil {
			return nil, rundir.Run{}, false
		}
		run, ok, _ := l.in(cs)
		if !ok {
			return nil, rundir.Run{}, false
		}
		a.logf("run %s is on site %s (%s)", run.ID, cand.Name, how)
		return cs, run, true
	}
	// the index
	idx := a.siteIndex()
	var e rundir.IndexEntry
	if l.key != "" {
		e, ok = idx.LookupKey(l.key)
	} else if e, ok = idx.Lookup(l.id); !ok && elementSuffix.MatchString(l.id) {
		e, ok = idx.Lookup(elementSuffix.ReplaceAllString(l.id, ""))
	}
	if ok {
		if cand, err := a.siteOf(e.Site, e.SiteFile); err == nil {
			cand.StateDir = e.StateDir
			if cs, run, ok := try(cand, "from the site index"); ok {
				return a.ownSite(cs, run)
			}
		}
	}
	// every site on the search path
	for _, f := range siteFiles() {
		cand, err := schema.LoadSite(f)
		if err != nil {
			continue
		}
		a.overrideStateDir(cand)
		if cs, run, ok := try(cand, "searched "+f); ok {
			if rec, err := run.Load(); err == nil && rec.Element == nil {
				// found by searching: remember it
				idx.Put(rundir.IndexEntry{Site: cand.Name, SiteFile: f, StateDir: cs.store.Dir, RunID: rec.RunID, Key: rec.Key})
			}
			return a.ownSite(cs, run)
		}
	}
	return nil, rundir.Run{}, notFound{fmt.Sprintf("%s; looked on the sites %s (give --site, or set TETHER_SITE_PATH to where the site files are)",
		l, strings.Join(looked, ", "))}
}

// notFound is a run that no site has (it is rundir.ErrNoRun).
type notFound struct{ msg string }

func (e notFound) Error() string { return e.msg }
func (e notFound) Unwrap() error { return rundir.ErrNoRun }

// siteOf loads a site by its file ("" is the embedded local site).
func (a *app) siteOf(name, file string) (*schema.Site, error) {
	if file == "" {
		s, err := schema.ParseSite("<embedded local site>", siteconfigs.DefaultLocal)
		if err != nil {
			return nil, err
		}
		s.File = ""
		if name != "" && s.Name != name {
			return nil, fmt.Errorf("site %s has no file", name)
		}
		return s, nil
	}
	return schema.LoadSite(file)
}

// ownSite reopens a run with the site its record names, when that is not
// the session's (two sites sharing a state directory) and no --site was
// given.
func (a *app) ownSite(s *session, run rundir.Run) (*session, rundir.Run, error) {
	if a.siteArg != "" {
		return s, run, nil
	}
	rec, err := run.Load()
	if err != nil || rec.Site == s.site.Name || rec.Site == "" {
		return s, run, nil
	}
	cand, err := a.siteOf(rec.Site, rec.SiteFile)
	if err != nil || cand.Name != rec.Site {
		return s, run, nil
	}
	cand.StateDir = s.store.Dir
	cs, err := a.open(cand)
	if err != nil {
		return s, run, nil
	}
	cr, err := cs.store.Find(run.Dir)
	if err != nil {
		return s, run, nil
	}
	a.logf("run %s is on site %s", run.ID, cand.Name)
	return cs, cr, nil
}
