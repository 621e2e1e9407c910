package main

import (
	"fmt"
	"path/filepath"
	"strings"
	"time"
	"unicode"

	"github.com/spf13/cobra"
	"github.com/tether-hpc/tether/internal/units"
	"github.com/tether-hpc/tether/schema"
)

func (a *app) pruneCmd() *cobra.Command {
	var olderThan string
	var keepFailed, dryRun bool
	c := &cobra.Command{
		Use:   "prune --older-than AGE [--site S] [--keep-failed] [--dry-run]",
		Short: "Remove decided runs older than AGE",
		Long: `prune removes the run directories of runs decided more than AGE ago
("30d", "12h"), with their key bindings, site index entries and listing
rows. It never removes a run that is active or undecided, nor one whose lock
is held (it checks again under the run's lock); an array run goes with its
elements. Without --site it prunes the default site and every site on the
search path (each state directory once). --keep-failed keeps failed and
cancelled runs; --dry-run only prints what would go.`,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(c *cobra.Command, _ []string) error {
			ctx, stop := signalContext(c.Context())
			defer stop()
			if olderThan == "" {
				return usageError{fmt.Errorf("give --older-than AGE, e.g. --older-than 30d")}
			}
			age, err := units.ParseDuration(olderThan)
			if err != nil || !unicode.IsLetter(rune(olderThan[len(olderThan)-1])) {
				return usageError{fmt.Errorf("--older-than %q: want an age with a unit, e.g. 30d, 12h, 90m", olderThan)}
			}
			sites, err := a.pruneSites()
			if err != nil {
				return err
			}
			cutoff := a.now().Add(-age)
			idx := a.siteIndex()
			var removed, kept int
			for _, site := range sites {
				s, err := a.open(site)
				if err != nil {
					a.logf("site %s: %v", site.Name, err)
					continue
				}
				rows, err := s.store.Rows()
				if err != nil {
					return err
				}
				for _, r := range rows {
					if r.Element || r.Outcome == "" || r.Broken {
						continue
					}
					if a.siteArg != "" && r.Site != "" && r.Site != site.Name {
						continue // another site's, sharing the state directory
					}
					when := r.Decided
					if when.IsZero() {
						when = r.Created
					}
					if when.After(cutoff) {
						continue
					}
					if keepFailed && (r.Outcome == schema.OutcomeFailed || r.Outcome == schema.OutcomeCancelled) {
						kept++
						continue
					}
					if dryRun {
						fmt.Fprintf(a.stdout, "would remove %s (%s, decided %s) on %s\n", r.RunID, r.Outcome, relTime(when, a.now()), site.Name)
						removed++
						continue
					}
					ok, why, err := s.store.Prune(ctx, r.RunID)
					if err != nil {
						a.logf("could not remove %s: %v", r.RunID, err)
						continue
					}
					if !ok {
						a.logf("kept %s: %s", r.RunID, why)
						kept++
						continue
					}
					idx.Remove(r.RunID, r.Key)
					fmt.Fprintf(a.stdout, "removed %s (%s, decided %s) on %s\n", r.RunID, r.Outcome, relTime(when, a.now()), site.Name)
					removed++
				}
			}
			verb := "removed"
			if dryRun {
				verb = "would remove"
			}
			a.logf("%s %d run(s) decided before %s; kept %d", verb, removed, cutoff.Local().Format(time.DateTime), kept)
			return nil
		},
	}
	c.Flags().StringVar(&olderThan, "older-than", "", "remove runs decided longer ago than this (e.g. 30d)")
	c.Flags().BoolVar(&keepFailed, "keep-failed", false, "keep failed and cancelled runs")
	c.Flags().BoolVar(&dryRun, "dry-run", false, "print what would be removed, remove nothing")
	return c
}

// pruneSites is --site's site, or the default one and every site on the
// search path, each state directory once.
func (a *app) pruneSites() ([]*schema.Site, error) {
	def, err := a.loadSite()
	if err != nil {
		return nil, err
	}
	if a.siteArg != "" {
		return []*schema.Site{def}, nil
	}
	out := []*schema.Site{def}
	seen := map[string]bool{}
	if d, err := def.ResolvedStateDir(); err == nil {
		seen[absOr(d)] = true
	}
	for _, f := range siteFiles() {
		s, err := schema.LoadSite(f)
		if err != nil {
			continue
		}
		a.overrideStateDir(s)
		d, err := s.ResolvedStateDir()
		if err != nil || seen[absOr(d)] {
			continue
		}
		seen[absOr(d)] = true
		out = append(out, s)
	}
	return out, nil
}

func absOr(p string) string {
	if abs, err := filepath.Abs(p); err == nil {
		return abs
	}
	return strings.TrimSpace(p)
}
