package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/tether-hpc/tether/backends"
	"github.com/tether-hpc/tether/backends/registry"
	"github.com/tether-hpc/tether/health"
	"github.com/tether-hpc/tether/launcher"
	"github.com/tether-hpc/tether/monitor"
	"github.com/tether-hpc/tether/rundir"
	"github.com/tether-hpc/tether/schema"
	siteconfigs "github.com/tether-hpc/tether/site-configs"
)

// app holds what every command shares: streams, environment and the
// global flags. Commands never call os.Exit; Main maps errors to codes.
type app struct {
	// element, when >= 0, selects one element of an array run (--element)
	element int

	stdout, stderr io.Writer
	getenv         func(string) string
	environ        func() []string
	now            func() time.Time

	siteArg  string
	stateDir string
	verbose  bool
	log      *slog.Logger
}

// Main runs the tether command line and returns the exit code.
func Main(args []string, stdout, stderr io.Writer) int {
	a := &app{stdout: stdout, stderr: stderr, getenv: os.Getenv, environ: os.Environ, now: time.Now, element: -1}
	root := a.rootCmd()
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.Execute()
	if err != nil {
		if msg := err.Error(); msg != "" {
			fmt.Fprintf(stderr, "tether: %s\n", strings.ReplaceAll(msg, "\n", "\n  "))
		}
	}
	return exitCode(err)
}

func (a *app) rootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "tether",
		Short: "Run analysis Tasks on HPC batch systems for workflow engines",
		Long: `tether submits Tasks to a site's batch system (slurmrestd, sbatch, PBS or
local processes), talks to them through files in the run directory, and
decides the outcome, including whether downstream steps may proceed after
a timeout because the Task checkpointed enough work.

Exit codes: 0 proceed, 1 failed, 2 bad input, 3 infrastructure error,
75 not finished yet (status), 99 skip downstream.`,
		SilenceErrors: true,
		SilenceUsage:  true,
		Args:          usageArgs(cobra.NoArgs),
		RunE:          func(c *cobra.Command, _ []string) error { return c.Help() },
		PersistentPreRun: func(c *cobra.Command, _ []string) {
			level := slog.LevelWarn
			if a.verbose {
				level = slog.LevelInfo
			}
			a.log = slog.New(slog.NewTextHandler(a.stderr, &slog.HandlerOptions{Level: level}))
		},
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	pf := root.PersistentFlags()
	pf.StringVar(&a.siteArg, "site", "", "site NAME or PATH (default $TETHER_SITE, else the embedded local site)")
	pf.StringVar(&a.stateDir, "state-dir", "", "override the site's state directory (default $TETHER_STATE_DIR)")
	pf.BoolVarP(&a.verbose, "verbose", "v", false, "log what tether decides")
	root.AddCommand(a.runCmd(), a.submitCmd(), a.waitCmd(), a.statusCmd(), a.stepCmd(), a.cancelCmd(),
		a.logsCmd(), a.showCmd(), a.listCmd(), a.pruneCmd(), a.watchCmd(), a.reportCmd(), a.validateCmd(), a.schemaCmd(),
		a.sitesCmd(), a.versionCmd(), a.monitorCmd(), a.shimCmd())
	return root
}

// usageArgs turns argument-count errors into usage errors (exit 2).
func usageArgs(v cobra.PositionalArgs) cobra.PositionalArgs {
	return func(c *cobra.Command, args []string) error {
		if err := v(c, args); err != nil {
			return usageError{fmt.Errorf("%w\nusage: %s", err, c.UseLine())}
		}
		return nil
	}
}

// loadSite resolves --site, $TETHER_SITE or the embedded default.
func (a *app) loadSite() (*schema.Site, error) {
	arg := a.siteArg
	if arg == "" {
		arg = a.getenv("TETHER_SITE")
	}
	var site *schema.Site
	var err error
	if arg == "" || arg == siteconfigs.DefaultLocalName && !fileExists(arg) {
		site, err = schema.ParseSite("<embedded local site>", siteconfigs.DefaultLocal)
		if err == nil {
			site.File = ""
		}
	} else {
		var path string
		path, err = schema.FindSite(arg, schema.SiteSearchPath())
		if err != nil {
			return nil, err
		}
		site, err = schema.LoadSite(path)
	}
	if err != nil {
		return nil, err
	}
	a.overrideStateDir(site)
	return site, nil
}

// overrideStateDir applies --state-dir or $TETHER_STATE_DIR to a site.
func (a *app) overrideStateDir(site *schema.Site) {
	if d := a.stateDir; d != "" {
		site.StateDir = d
	} else if d := a.getenv("TETHER_STATE_DIR"); d != "" {
		site.StateDir = d
	}
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// session is an opened site: its state directory, backend and engine.
type session struct {
	site      *schema.Site
	store     *rundir.Store
	backend   backends.Backend
	engine    *monitor.Engine
	submitter *launcher.Submitter
}

func (a *app) open(site *schema.Site) (*session, error) {
	dir, err := site.ResolvedStateDir()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", rundir.ErrStateDir, err)
	}
	store, err := rundir.OpenMode(dir, rundir.ModesFor(site.FileMode))
	if err != nil {
		return nil, err
	}
	a.indexRuns(site, store)
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("cannot find the tether binary: %w", err)
	}
	be, err := registry.Open(site, registry.Options{StateDir: store.Dir, Self: []string{self}, Log: a.log})
	if err != nil {
		return nil, err
	}
	host, _ := os.Hostname()
	sub := &launcher.Submitter{Store: store, Site: site, Backend: be, TetherPath: self, Now: a.now,
		Limits: launcher.NewLimits(site, store, be, a.now, a.log), Log: a.log,
		// run and submit wait out a submit limit as long as they run (the
		// monitor sets its own)
		LimitWait: 365 * 24 * time.Hour}
	if r := site.Submit.MaxPerSecond; r > 0 {
		sub.Pace = &launcher.Pace{Path: filepath.Join(store.Dir, "poll", "submit-"+site.Name+".json"), Rate: r, Now: a.now}
	}
	poller := &monitor.Poller{Site: site.Name, Store: store, Backend: be, Log: a.log, MinInterval: site.Poll.MinInterval.D(),
		MaxPerMinute: site.Poll.MaxQueriesPerMinute, Now: a.now}
	eng := &monitor.Engine{Site: site, Store: store, Backend: be, Poller: poller, Submitter: sub,
		Now: a.now, Log: a.log, Actor: fmt.Sprintf("tether pid %d on %s", os.Getpid(), host)}
	if bad := health.Open(store.Dir, site); bad != nil {
		sub.BadNodes, eng.BadNodes = bad, bad
	}
	return &session{site: site, store: store, backend: be, engine: eng, submitter: sub}, nil
}

// openRunOrKey finds a run by its argument, or by --key when no argument
// is given.
func (a *app) openRunOrKey(args []string, key string) (*session, rundir.Run, error) {
	s, run, err := a.openRunOrKeyOnly(args, key)
	if err != nil {
		return s, run, err
	}
	return a.pickElement(s, run)
}

// elementFlag adds --element to a command that takes a run.
func (a *app) elementFlag(c *cobra.Command) {
	a.element = -1
	c.Flags().IntVar(&a.element, "element", -1, "one element of an array run (its index, from 0)")
}

// pickElement turns an array run into its element --element N.
func (a *app) pickElement(s *session, run rundir.Run) (*session, rundir.Run, error) {
	if a.element < 0 {
		return s, run, nil
	}
	rec, err := run.Load()
	if err != nil {
		return s, run, err
	}
	if !rec.Task.Array.Enabled() {
		return s, run, usageError{fmt.Errorf("run %s is not an array run: --element applies to array runs", run.ID)}
	}
	if n := rec.Task.Array.Size(); a.element >= n {
		return s, run, usageError{fmt.Errorf("run %s has elements 0..%d, not %d", run.ID, n-1, a.element)}
	}
	el, err := s.store.Find(schema.ElementRunID(run.ID, a.element))
	if err != nil {
		return s, run, fmt.Errorf("element %d of run %s: %w", a.element, run.ID, err)
	}
	return s, el, nil
}

func (a *app) openRunOrKeyOnly(args []string, key string) (*session, rundir.Run, error) {
	switch {
	case len(args) == 1 && key == "":
		return a.openRun(args[0])
	case len(args) == 0 && key != "":
		return a.locate(lookup{key: key})
	}
	return nil, rundir.Run{}, usageError{errors.New("give a RUN or --key, not both")}
}

// openRun opens the site and finds a run by id or run-directory path. A
// run directory carries its site: when the run was made with another site
// file, that one is used.
func (a *app) openRun(arg string) (*session, rundir.Run, error) {
	if !strings.ContainsRune(arg, os.PathSeparator) {
		return a.locate(lookup{id: arg})
	}
	site, err := a.loadSite()
	if err != nil {
		return nil, rundir.Run{}, err
	}
	if strings.ContainsRune(arg, os.PathSeparator) {
		var rec schema.RunRecord
		if err := rundir.ReadJSON(arg+"/run.json", &rec); err == nil && rec.SiteFile != "" && a.siteArg == "" {
			if s, err := schema.LoadSite(rec.SiteFile); err == nil {
				site = s
			}
		}
	}
	s, err := a.open(site)
	if err != nil {
		return nil, rundir.Run{}, err
	}
	run, err := s.store.Find(arg)
	if err != nil {
		return nil, rundir.Run{}, err
	}
	return s, run, nil
}

// printJSON writes v as one line: the last line of stdout is the contract.
func printJSON(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}

// errorOutcome is the JSON line printed when a command fails before an
// outcome exists, so scripts always find JSON on the last line.
func errorOutcome(err error, site *schema.Site) schema.Outcome {
	o := schema.Outcome{V: schema.OutcomeVersion, Outcome: "error", Reason: err.Error()}
	if site != nil {
		o.Site, o.Backend = site.Name, site.Backend
	}
	return o
}

// outcomeExit is the exit code of an outcome JSON.
func outcomeExit(o *schema.Outcome) int {
	if !o.Final {
		return ExitNotFinished
	}
	return monitor.ExitCode(o.Outcome, o.Cause)
}

var errSilent = errors.New("")
