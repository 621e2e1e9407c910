package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/tether-hpc/tether/backends"
	"github.com/tether-hpc/tether/backends/registry"
	"github.com/tether-hpc/tether/launcher"
	"github.com/tether-hpc/tether/monitor"
	"github.com/tether-hpc/tether/rundir"
	"github.com/tether-hpc/tether/schema"
)

// submitOpts are the flags of run and submit.
type submitOpts struct {
	sets    []string
	key     string
	timeout time.Duration
	dryRun  bool
}

func (a *app) runCmd() *cobra.Command {
	var o submitOpts
	c := &cobra.Command{
		Use:   "run [flags] TASK.toml",
		Short: "Submit a Task (or reattach to it) and wait for its outcome",
		Long: `run submits the Task, waits for it and prints the outcome as one JSON line
on stdout (the last line); progress and logs go to stderr.

With an idempotency key (--key, else AIRFLOW_CTX_DAG_ID/AIRFLOW_CTX_DAG_RUN_ID/
AIRFLOW_CTX_TASK_ID when Airflow sets them), running it again reattaches to
the live job, prints a finished outcome that may proceed again, or starts a
new attempt after a failure. It never submits twice for a live key.`,
		Args: usageArgs(cobra.ExactArgs(1)),
		RunE: func(c *cobra.Command, args []string) error {
			return a.submitAndMaybeWait(c.Context(), args[0], o, true)
		},
	}
	a.submitFlags(c, &o)
	c.Flags().DurationVar(&o.timeout, "timeout", 0, "give up waiting after this long (exit 3; the job keeps running)")
	return c
}

func (a *app) submitCmd() *cobra.Command {
	var o submitOpts
	c := &cobra.Command{
		Use:   "submit [flags] TASK.toml",
		Short: "Submit a Task and print its run id as JSON without waiting",
		Args:  usageArgs(cobra.ExactArgs(1)),
		RunE: func(c *cobra.Command, args []string) error {
			return a.submitAndMaybeWait(c.Context(), args[0], o, false)
		},
	}
	a.submitFlags(c, &o)
	c.Flags().BoolVar(&o.dryRun, "dry-run", false, "print the wrapper script and the backend request; submit nothing")
	return c
}

func (a *app) submitFlags(c *cobra.Command, o *submitOpts) {
	c.Flags().StringArrayVar(&o.sets, "set", nil, "override a task key, e.g. --set resources.walltime=30m (repeatable)")
	c.Flags().StringVar(&o.key, "key", "", "idempotency key (default from the Airflow context variables)")
}

// airflowKey builds the default idempotency key from Airflow's context.
func (a *app) airflowKey() string {
	dag, run, task := a.getenv("AIRFLOW_CTX_DAG_ID"), a.getenv("AIRFLOW_CTX_DAG_RUN_ID"), a.getenv("AIRFLOW_CTX_TASK_ID")
	if dag == "" || run == "" || task == "" {
		return ""
	}
	key := "airflow/" + dag + "/" + run + "/" + task
	if mi := a.getenv("AIRFLOW_CTX_MAP_INDEX"); mi != "" && mi != "-1" {
		key += "/" + mi
	}
	return key
}

// signalContext cancels on SIGINT/SIGTERM: the waiting stops, the job does not.
func signalContext(parent context.Context) (context.Context, context.CancelFunc) {
	if parent == nil {
		parent = context.Background()
	}
	return signal.NotifyContext(parent, os.Interrupt, syscall.SIGTERM)
}

func (a *app) submitAndMaybeWait(parent context.Context, taskFile string, o submitOpts, wait bool) (err error) {
	ctx, stop := signalContext(parent)
	defer stop()
	site, err := a.loadSite()
	if err != nil {
		return a.failJSON(err, nil)
	}
	task, err := schema.LoadTask(taskFile, o.sets, site)
	if err != nil {
		return a.failJSON(err, site)
	}
	if o.dryRun {
		return a.dryRun(task, site)
	}
	s, err := a.open(site)
	if err != nil {
		return a.failJSON(err, site)
	}
	key := o.key
	if key == "" {
		key = a.airflowKey()
	}
	run, replay, err := a.prepareRun(ctx, s, task, taskFile, key)
	if err != nil {
		o := errorOutcome(err, site)
		if rec, lerr := loadIf(run); lerr == nil {
			// the run stays (the submit may have reached the scheduler):
			// name it, so a caller without a key can wait for it
			o.RunID, o.RunDir, o.Key, o.Attempts = rec.RunID, run.Dir, rec.Key, len(rec.Attempts)
			a.logf("run %s is kept: its job is looked for by its tag and sent again only when it never reached the scheduler (tether wait %s)", rec.RunID, rec.RunID)
		}
		printJSON(a.stdout, o)
		return err
	}
	if replay != nil {
		fmt.Fprintf(a.stderr, "tether: run %s already finished (%s); not submitting again\n", run.ID, replay.Outcome)
		return a.finalJSON(replay)
	}
	if !wait {
		// No scheduler query: the job was just submitted, and a query
		// here would wait out the site's rate limit for nothing.
		st, err := s.engine.StepWith(ctx, run, &monitor.Snapshot{}, nil, newTrackerFor(run))
		if err != nil && st.Outcome.RunID == "" {
			return a.failJSON(err, site)
		}
		if err := printJSON(a.stdout, st.Outcome); err != nil {
			return err
		}
		return nil
	}
	return a.waitRun(ctx, s, run, o.timeout)
}

// prepareRun creates or finds the run for a key and makes sure it has a
// live attempt (monitor.Engine.Start). It returns a finished outcome to
// replay instead when the key's run already ended in a way that may
// proceed.
func (a *app) prepareRun(ctx context.Context, s *session, task *schema.Task, taskFile, key string) (rundir.Run, *schema.Outcome, error) {
	abs, _ := filepath.Abs(taskFile)
	var before *schema.RunRecord
	if key != "" {
		if id, ok, _ := s.store.LookupKey(key); ok {
			before, _ = s.store.Run(id).Load()
		}
	}
	env, withheld := launcher.JobEnv(s.site, task.PassEnv, a.environ())
	if len(withheld) > 0 {
		a.log.Debug("environment withheld from the job by the site's policy", "names", strings.Join(withheld, ","))
	}
	run, replay, err := s.engine.Start(ctx, monitor.StartRequest{
		Task: task, TaskFile: abs, SiteFile: absOrEmpty(s.site.File), Key: key, SpecHash: launcher.SpecHash(task, s.site),
		Env: env, EnvHash: launcher.EnvHash(env), EnvDiff: launcher.EnvDiff,
	})
	if err != nil {
		if errors.Is(err, monitor.ErrKeyConflict) {
			return run, nil, withCode(ExitBadInput, err)
		}
		return run, nil, err
	}
	if replay != nil {
		return run, replay, nil
	}
	rec, err := run.Load()
	if err != nil {
		return run, nil, err
	}
	switch {
	case before == nil || before.RunID != rec.RunID:
		a.logf("submitted run %s as job %s on %s", rec.RunID, jobOf(rec), s.site.Name)
	case len(before.Attempts) == len(rec.Attempts):
		a.logf("reattaching to run %s (job %s)", rec.RunID, jobOf(rec))
	default:
		a.logf("run %s ended before; started attempt %d", rec.RunID, rec.Current().N)
	}
	return run, nil, nil
}

// loadIf reads a run's record, if there is a run.
func loadIf(run rundir.Run) (*schema.RunRecord, error) {
	if run.ID == "" {
		return nil, rundir.ErrNoRun
	}
	return run.Load()
}

func absOrEmpty(p string) string {
	if p == "" {
		return ""
	}
	if abs, err := filepath.Abs(p); err == nil {
		return abs
	}
	return p
}

func jobOf(rec *schema.RunRecord) string { return rec.JobLabel() }

// logf writes a progress note to stderr.
func (a *app) logf(format string, args ...any) {
	fmt.Fprintf(a.stderr, "tether: "+format+"\n", args...)
}

// failJSON prints an error outcome line and returns err for the exit code.
func (a *app) failJSON(err error, site *schema.Site) error {
	printJSON(a.stdout, errorOutcome(err, site))
	return err
}

// finalJSON prints an outcome and exits with its code.
func (a *app) finalJSON(o *schema.Outcome) error {
	if err := printJSON(a.stdout, o); err != nil {
		return err
	}
	if code := outcomeExit(o); code != ExitOK {
		return withCode(code, nil)
	}
	return nil
}

func (a *app) dryRun(task *schema.Task, site *schema.Site) error {
	dir, err := site.ResolvedStateDir()
	if err != nil {
		return err
	}
	store := &rundir.Store{Dir: dir}
	run := store.Run(rundir.NewRunID(task.Name, a.now()))
	self, _ := os.Executable()
	env, withheld := launcher.JobEnv(site, task.PassEnv, a.environ())
	// the same wrapper as the real job's: with the warn timer where the
	// scheduler cannot warn the batch script (PBS, slurmrestd v0.0.38)
	be, beErr := registry.Open(site, registry.Options{StateDir: dir, Self: []string{self}})
	warnTimer := true
	if beErr == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		warnTimer = launcher.NeedsWarnTimer(ctx, be)
		cancel()
	}
	plan, err := launcher.Build(run, task, site, launcher.AttemptSpec{N: 1, Env: env, WarnTimer: warnTimer}, self)
	if err != nil {
		return err
	}
	fmt.Fprintf(a.stdout, "# site %s (backend %s); nothing was submitted\n", site.Name, site.Backend)
	policy := cmp.Or(site.Env.Propagate, schema.PropagateSafe)
	fmt.Fprintf(a.stdout, "# environment (policy %s): the job gets %d of your variables: %s\n", policy, len(env), strings.Join(slices.Sorted(maps.Keys(env)), " "))
	fmt.Fprintf(a.stdout, "# withheld by the site's policy (names only): %s\n", cmp.Or(strings.Join(withheld, " "), "none"))
	fmt.Fprintf(a.stdout, "# launch: %s\n", strings.Join(plan.Launch, " "))
	fmt.Fprintf(a.stdout, "# ---- %s ----\n%s", run.Script(1), plan.Script)
	if plan.TaskScript != nil {
		fmt.Fprintf(a.stdout, "# ---- %s ----\n%s", run.TaskScript(1), plan.TaskScript)
	}
	if beErr == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		pl, err := launcher.NewLimits(site, store, be, a.now, a.log).Place(ctx, plan.Request)
		cancel()
		if err != nil {
			return err
		}
		plan.Request.Partition = pl.Partition
		if pl.Why != "" {
			fmt.Fprintf(a.stdout, "# partition: %s\n", pl.Why)
		}
	}
	fmt.Fprintf(a.stdout, "# ---- backend request ----\n")
	if beErr == nil {
		if d, ok := be.(backends.Describer); ok {
			fmt.Fprintf(a.stdout, "%s\n", d.Describe(plan.Request))
		}
	}
	return printJSON(a.stdout, plan.Request)
}
