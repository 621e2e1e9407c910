// Package health keeps a site's shared bad-node list: nodes that failed
// attempts of the site's runs, counted across runs and tether processes
// through one file in the state directory, and the nodes new submissions
// should avoid because of it.
package health

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"time"

	"github.com/tether-hpc/tether/rundir"
	"github.com/tether-hpc/tether/schema"
)

// Version is the format of <state>/health/bad-nodes-<site>.json.
const Version = 1

// File is the list as stored.
type File struct {
	V int `json:"v"`
	// Failures are the times each node failed an attempt, within the
	// policy's window.
	Failures map[string][]time.Time `json:"failures,omitempty"`
	// Excluded are the nodes on the list, with when they leave it.
	Excluded map[string]time.Time `json:"excluded,omitempty"`
}

// Node is one listed node, for display and metrics.
type Node struct {
	Name     string    `json:"name"`
	Failures int       `json:"failures"`
	Until    time.Time `json:"until"`
}

// List is one site's bad-node list.
type List struct {
	Path   string
	Policy schema.SiteBadNodes
	Now    func() time.Time
}

// Open returns the site's list under the state directory dir, or nil when
// the site keeps none.
func Open(dir string, site *schema.Site) *List {
	if !site.BadNodes.Enabled() {
		return nil
	}
	return &List{Path: filepath.Join(dir, "health", "bad-nodes-"+site.Name+".json"), Policy: site.BadNodes, Now: time.Now}
}

// update changes the file under its lock.
func (l *List) update(ctx context.Context, f func(*File)) (*File, error) {
	if err := os.MkdirAll(filepath.Dir(l.Path), 0o700); err != nil {
		return nil, err
	}
	lock, err := rundir.LockFile(ctx, l.Path+".lock")
	if err != nil {
		return nil, err
	}
	defer lock.Unlock()
	cur, err := l.read()
	if err != nil {
		return nil, err
	}
	f(cur)
	l.prune(cur)
	cur.V = Version
	return cur, rundir.WriteJSON(l.Path, cur)
}

func (l *List) read() (*File, error) {
	var f File
	err := rundir.ReadJSON(l.Path, &f)
	switch {
	case errors.Is(err, os.ErrNotExist):
		f = File{V: Version}
	case err != nil:
		return nil, fmt.Errorf("bad-node list: %w", err)
	case f.V != Version:
		return nil, fmt.Errorf("bad-node list %s: format %d, this tether reads %d", l.Path, f.V, Version)
	}
	if f.Failures == nil {
		f.Failures = map[string][]time.Time{}
	}
	if f.Excluded == nil {
		f.Excluded = map[string]time.Time{}
	}
	return &f, nil
}

// prune drops failures older than the window and expired exclusions.
func (l *List) prune(f *File) {
	now := l.Now()
	for n, ts := range f.Failures {
		ts = slices.DeleteFunc(ts, func(t time.Time) bool { return now.Sub(t) > l.Policy.Window() })
		if len(ts) == 0 {
			delete(f.Failures, n)
		} else {
			f.Failures[n] = ts
		}
	}
	for n, until := range f.Excluded {
		if !now.Before(until) {
			delete(f.Excluded, n)
		}
	}
}

// Record counts one failed attempt on each of nodes, and lists the nodes
// that reach the policy's count within its window. It returns the nodes
// newly listed.
func (l *List) Record(ctx context.Context, nodes []string) ([]string, error) {
	if l == nil || len(nodes) == 0 {
		return nil, nil
	}
	var listed []string
	_, err := l.update(ctx, func(f *File) {
		now := l.Now().UTC()
		l.prune(f)
		for _, n := range slices.Compact(slices.Sorted(slices.Values(nodes))) {
			f.Failures[n] = append(f.Failures[n], now)
			if len(f.Failures[n]) >= l.Policy.After {
				if _, already := f.Excluded[n]; !already {
					listed = append(listed, n)
				}
				f.Excluded[n] = now.Add(l.Policy.Exclusion())
			}
		}
	})
	return listed, err
}

// Nodes are the nodes on the list now, by name.
func (l *List) Nodes() ([]Node, error) {
	if l == nil {
		return nil, nil
	}
	f, err := l.read()
	if err != nil {
		return nil, err
	}
	l.prune(f)
	out := make([]Node, 0, len(f.Excluded))
	for n, until := range f.Excluded {
		out = append(out, Node{Name: n, Failures: len(f.Failures[n]), Until: until})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Excluded are the names of the nodes new submissions avoid.
func (l *List) Excluded() ([]string, error) {
	nodes, err := l.Nodes()
	names := make([]string, len(nodes))
	for i, n := range nodes {
		names[i] = n.Name
	}
	return names, err
}
