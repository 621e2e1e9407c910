package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"github.com/tether-hpc/tether/backends"
	"time"

	"github.com/spf13/cobra"
	"github.com/tether-hpc/tether/monitor"
	"github.com/tether-hpc/tether/rundir"
	"github.com/tether-hpc/tether/schema"
)

func newTrackerFor(run rundir.Run) *monitor.Tracker { return monitor.NewTracker(run) }

func (a *app) waitCmd() *cobra.Command {
	var timeout time.Duration
	var key string
	c := &cobra.Command{
		Use:   "wait [flags] RUN | --key KEY",
		Short: "Wait for a run's outcome and print it as JSON",
		Long:  "RUN is a run id or the path of a run directory.",
		Args:  usageArgs(cobra.MaximumNArgs(1)),
		RunE: func(c *cobra.Command, args []string) error {
			ctx, stop := signalContext(c.Context())
			defer stop()
			s, run, err := a.openRunOrKey(args, key)
			if err != nil {
				return a.failJSON(err, nil)
			}
			return a.waitRun(ctx, s, run, timeout)
		},
	}
	c.Flags().DurationVar(&timeout, "timeout", 0, "give up waiting after this long (exit 3; the job keeps running)")
	c.Flags().StringVar(&key, "key", "", "find the run by its idempotency key instead of its id")
	a.elementFlag(c)
	return c
}

// waitRun waits with a progress display on stderr and prints the outcome.
// authGiveUp is how long `tether wait` and `tether run` keep waiting while
// the scheduler refuses tether's credentials (an expired or revoked JWT).
const authGiveUp = 10 * time.Minute

func (a *app) waitRun(ctx context.Context, s *session, run rundir.Run, timeout time.Duration) error {
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	p := newProgress(a.stderr, run.ID)
	warned := time.Time{}
	var last *monitor.Status
	ctx, giveUp := context.WithCancelCause(ctx)
	defer giveUp(nil)
	var authSince time.Time
	out, err := s.engine.Wait(ctx, run, func(st monitor.Status) {
		last = &st
		// Refused credentials do not heal by waiting: after authGiveUp,
		// exit 3 (the job keeps running; a retry reattaches to it).
		if errors.Is(st.PollErr, backends.ErrAuth) {
			if authSince.IsZero() {
				authSince = a.now()
			} else if a.now().Sub(authSince) >= authGiveUp {
				giveUp(st.PollErr)
			}
		} else {
			authSince = time.Time{}
		}
		if trouble := cmp.Or(st.PollErr, st.ActErr); trouble != nil && time.Since(warned) > time.Minute {
			warned = time.Now()
			p.clear()
			what := "scheduler query failed"
			if st.PollErr == nil {
				what = "could not act on the run (" + st.Decision.Action.String() + ")"
			}
			a.logf("%s; still waiting, nothing is decided on this: %v", what, trouble)
		}
		p.update(st)
	})
	p.clear()
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
			why := "interrupted"
			if errors.Is(err, context.DeadlineExceeded) {
				why = fmt.Sprintf("gave up after --timeout %s", timeout)
			}
			if cause := context.Cause(ctx); errors.Is(cause, backends.ErrAuth) {
				why = fmt.Sprintf("gave up after %s of refused credentials (%v)", authGiveUp, cause)
			}
			err = withCode(ExitInfra, fmt.Errorf("%s while waiting for run %s; the job keeps running (tether wait %s)", why, run.ID, run.ID))
			if last != nil {
				// the run as last seen, so scripts still learn its ids
				o := last.Outcome
				o.Reason = err.Error()
				printJSON(a.stdout, o)
				return err
			}
		}
		return a.failJSON(err, s.site)
	}
	a.reportOutcome(out)
	return a.finalJSON(out)
}

// reportOutcome says in words on stderr how the run ended.
func (a *app) reportOutcome(o *schema.Outcome) {
	a.logf("run %s %s: %s", o.RunID, o.Outcome, o.Reason)
}
