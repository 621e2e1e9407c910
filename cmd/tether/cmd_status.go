package main

import (
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"
	"github.com/tether-hpc/tether/backends"
)

func (a *app) statusCmd() *cobra.Command {
	var key string
	c := &cobra.Command{
		Use:   "status [flags] RUN | --key KEY",
		Short: "Look at a run once, decide it if it has ended, and print JSON",
		Long: `status polls the run once (through the site's shared poll cache), decides
the outcome when the job has ended (starting a retry attempt when the policy
asks for one) and prints the run as one JSON line.

Exit codes: 75 while the run is not finished; when it is, the outcome's
code (0 proceed, 1 failed or cancelled, 99 skip).`,
		Args: usageArgs(cobra.MaximumNArgs(1)),
		RunE: func(c *cobra.Command, args []string) error {
			ctx, stop := signalContext(c.Context())
			defer stop()
			s, run, err := a.openRunOrKey(args, key)
			if err != nil {
				return a.failJSON(err, nil)
			}
			st, err := s.engine.Step(ctx, run, s.site.Poll.MinInterval.D(), newTrackerFor(run))
			if err != nil {
				return a.failJSON(err, s.site)
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
	return c
}

func (a *app) cancelCmd() *cobra.Command {
	var key string
	c := &cobra.Command{
		Use:   "cancel [flags] RUN | --key KEY",
		Short: "Cancel a run's job; the run ends cancelled",
		Args:  usageArgs(cobra.MaximumNArgs(1)),
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
			lock, err := run.Lock(ctx)
			if err != nil {
				return a.failJSON(err, s.site)
			}
			rec, err := run.Load()
			if err != nil {
				lock.Unlock()
				return a.failJSON(err, s.site)
			}
			now := a.now().UTC()
			rec.CancelRequested = &now
			err = run.Save(rec)
			lock.Unlock()
			if err != nil {
				return a.failJSON(err, s.site)
			}
			if cur := rec.Current(); cur != nil && cur.JobID != "" {
				if err := s.backend.Cancel(ctx, backends.JobID(cur.JobID)); err != nil {
					return a.failJSON(fmt.Errorf("cancel job %s: %w", cur.JobID, err), s.site)
				}
				a.logf("cancelled job %s of run %s", cur.JobID, run.ID)
			}
			st, err := s.engine.Step(ctx, run, 0, newTrackerFor(run))
			if err != nil {
				return a.failJSON(err, s.site)
			}
			return printJSON(a.stdout, st.Outcome)
		},
	}
	c.Flags().StringVar(&key, "key", "", "find the run by its idempotency key instead of its id")
	return c
}

// relTime renders a timestamp for listings.
func relTime(t time.Time, now time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := now.Sub(t).Round(time.Second)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh ago", int(d.Hours()))
	}
	return t.Local().Format("2006-01-02")
}
