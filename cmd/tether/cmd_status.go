package main

import (
	"errors"
	"time"

	"github.com/spf13/cobra"
	"github.com/tether-hpc/tether/backends"
	"github.com/tether-hpc/tether/internal/units"
)

func (a *app) statusCmd() *cobra.Command {
	return a.lookCmd("status", "Look at a run once without acting, and print it as JSON",
		`status looks at the run once (through the site's shared poll cache) and
prints it as one JSON line. It only looks: it never submits, retries,
cancels or writes an outcome. A run whose job has ended but that nobody has
decided yet is shown as not finished, with the decision an acting command
would take in its reason; tether run, wait, step or the monitor decide it.

Exit codes: 75 while the run is not finished (or not decided yet); when it
is, the outcome's code (0 proceed, 1 failed or cancelled, 99 skip).`, false)
}

func (a *app) stepCmd() *cobra.Command {
	return a.lookCmd("step", "Look at a run once, decide and act, and print it as JSON",
		`step looks at the run once like status, then carries the decision out as
tether run and the monitor do: it writes the outcome of a run whose job has
ended, submits a retry when the policy asks for one, recovers an attempt
whose submit answer was lost, and re-sends a cancel the scheduler has not
taken. Airflow's deferrable TetherTrigger calls it on every poll, so a
deferred run is decided without a monitor.

Exit codes: 75 while the run is not finished; when it is, the outcome's
code (0 proceed, 1 failed or cancelled, 99 skip).`, true)
}

// lookCmd is status (act false) or step (act true).
func (a *app) lookCmd(name, short, long string, act bool) *cobra.Command {
	var key string
	c := &cobra.Command{
		Use:   name + " [flags] RUN | --key KEY",
		Short: short,
		Long:  long,
		Args:  usageArgs(cobra.MaximumNArgs(1)),
		RunE: func(c *cobra.Command, args []string) error {
			ctx, stop := signalContext(c.Context())
			defer stop()
			s, run, err := a.openRunOrKey(args, key)
			if err != nil {
				return a.failJSON(err, nil)
			}
			look := s.engine.Look
			if act {
				look = s.engine.Step
			}
			st, err := look(ctx, run, s.site.Poll.MinInterval.D(), newTrackerFor(run))
			if err != nil {
				return a.failJSON(err, s.site)
			}
			if st.ActErr != nil {
				a.logf("could not act on the run (%v); the next look tries again", st.ActErr)
			}
			if st.PollErr != nil {
				a.logf("scheduler query failed (%v); showing the last known state", st.PollErr)
				if errors.Is(st.PollErr, backends.ErrAuth) && !st.Outcome.Final {
					// not "still running" (75): nothing will change until
					// someone fixes the credentials
					o := st.Outcome
					o.Reason = st.PollErr.Error()
					printJSON(a.stdout, o)
					return withCode(ExitInfra, st.PollErr)
				}
			}
			return a.finalJSON(&st.Outcome)
		},
	}
	c.Flags().StringVar(&key, "key", "", "find the run by its idempotency key instead of its id")
	a.elementFlag(c)
	return c
}

func (a *app) cancelCmd() *cobra.Command {
	var key string
	c := &cobra.Command{
		Use:   "cancel [flags] RUN | --key KEY",
		Short: "Cancel a run's job; the run ends cancelled",
		Long: `cancel records the request in the run, tells the scheduler, and looks at
the run once. It never submits a job. When the scheduler cannot be told now
(it is unreachable, or the job id is not known yet), the request stays
recorded, no new attempt starts, and every acting look (tether run, wait,
step, the monitor) sends the cancel again; cancel then exits 3.`,
		Args: usageArgs(cobra.MaximumNArgs(1)),
		RunE: func(c *cobra.Command, args []string) error {
			ctx, stop := signalContext(c.Context())
			defer stop()
			s, run, err := a.openRunOrKey(args, key)
			if err != nil {
				return a.failJSON(err, nil)
			}
			if o, done, err := run.Outcome(); err != nil {
				return a.failJSON(err, s.site)
			} else if done {
				a.logf("run %s already finished (%s)", run.ID, o.Outcome)
				return printJSON(a.stdout, o)
			}
			st, err := s.engine.Cancel(ctx, run)
			if err != nil {
				return a.failJSON(err, s.site)
			}
			if err := printJSON(a.stdout, st.Outcome); err != nil {
				return err
			}
			if st.ActErr != nil && !st.Outcome.Final {
				a.logf("the cancel is recorded, but the scheduler did not take it yet (%v); it is sent again by the next tether run, wait, step or monitor look", st.ActErr)
				return withCode(ExitInfra, errSilent)
			}
			if j := st.Outcome.JobID; j != "" {
				a.logf("cancelled job %s of run %s", j, run.ID)
			}
			return nil
		},
	}
	c.Flags().StringVar(&key, "key", "", "find the run by its idempotency key instead of its id")
	a.elementFlag(c)
	return c
}

// relTime renders a timestamp for listings: how long ago, within 48
// hours; the date before that.
func relTime(t time.Time, now time.Time) string {
	if s, recent := units.Ago(t, now); recent {
		return s
	}
	return t.Local().Format("2006-01-02")
}
