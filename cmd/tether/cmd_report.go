package main

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"github.com/tether-hpc/tether/rundir"
	"github.com/tether-hpc/tether/schema"
)

func (a *app) reportCmd() *cobra.Command {
	var (
		heartbeat, checkpoint bool
		progress, fraction    float64
		message, resume       string
		paths, results        []string
	)
	c := &cobra.Command{
		Use:   "report [flags]",
		Short: "Report from inside a Task: heartbeat, progress, checkpoint, result",
		Long: `report appends one event to the run's status file, which the wrapper names
in TETHER_STATUS_FILE. Tasks in any language call it:

  tether report --heartbeat
  tether report --progress 0.4 --message "step 400 of 1000"
  tether report --checkpoint --fraction 0.8 --path out/part-8.h5 --resume step=800
  tether report --result rows=1234 --result model=out/model.pt

A checkpoint says how far the Task got (--fraction, 0..1), which outputs
exist (--path, relative to the current directory) and, with --resume, the
state a retry attempt receives in TETHER_RESUME_FROM. Concurrent writers
(MPI ranks, several processes) are safe.`,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(c *cobra.Command, _ []string) error {
			path := a.getenv("TETHER_STATUS_FILE")
			if path == "" {
				return usageError{errors.New("TETHER_STATUS_FILE is not set: tether report runs inside a Task started by tether")}
			}
			ev := schema.Event{Type: schema.EventMessage, Message: message, Attempt: atoi(a.getenv("TETHER_ATTEMPT"))}
			ev.Host, _ = os.Hostname()
			if r, ok := rankFromEnv(a.getenv); ok {
				ev.Rank = &r
			}
			kinds := 0
			f := c.Flags()
			if heartbeat {
				kinds++
				ev.Type = schema.EventHeartbeat
			}
			if f.Changed("progress") {
				kinds++
				if err := checkFraction("--progress", progress); err != nil {
					return err
				}
				ev.Type, ev.Fraction = schema.EventProgress, &progress
			}
			if checkpoint {
				kinds++
				ev.Type = schema.EventCheckpoint
				if !f.Changed("fraction") {
					return usageError{errors.New("--checkpoint needs --fraction (0..1): how much of the work is done")}
				}
				if err := checkFraction("--fraction", fraction); err != nil {
					return err
				}
				ev.Fraction, ev.Resume = &fraction, resume
				for _, p := range paths {
					abs, err := filepath.Abs(p)
					if err != nil {
						return err
					}
					// refused now, not at the walltime: a checkpoint whose
					// output is missing would end the run failed then
					if _, err := os.Stat(abs); err != nil {
						return usageError{fmt.Errorf("--path %s: %w: a checkpoint's outputs must exist when it is reported (write them first); nothing was recorded", p, errors.Unwrap(err))}
					}
					ev.Paths = append(ev.Paths, abs)
				}
			} else if f.Changed("fraction") || len(paths) > 0 || resume != "" {
				return usageError{errors.New("--fraction, --path and --resume go with --checkpoint")}
			}
			if len(results) > 0 {
				kinds++
				ev.Type = schema.EventResult
				ev.Results = map[string]string{}
				for _, r := range results {
					k, v, ok := strings.Cut(r, "=")
					if !ok || k == "" {
						return usageError{fmt.Errorf("--result %q: want key=value", r)}
					}
					ev.Results[k] = v
				}
			}
			if kinds > 1 {
				return usageError{errors.New("report one kind of event at a time: --heartbeat, --progress, --checkpoint or --result")}
			}
			if kinds == 0 && message == "" {
				return usageError{errors.New("nothing to report: use --heartbeat, --progress, --checkpoint, --result or --message")}
			}
			if err := rundir.AppendEvent(path, ev); err != nil {
				return withCode(ExitInfra, err)
			}
			return nil
		},
	}
	f := c.Flags()
	f.BoolVar(&heartbeat, "heartbeat", false, "the Task is alive")
	f.Float64Var(&progress, "progress", 0, "fraction of the work done (0..1)")
	f.BoolVar(&checkpoint, "checkpoint", false, "record a checkpoint")
	f.Float64Var(&fraction, "fraction", 0, "with --checkpoint: fraction of the work the checkpoint covers (0..1)")
	f.StringArrayVar(&paths, "path", nil, "with --checkpoint: an output that exists (repeatable)")
	f.StringVar(&resume, "resume", "", "with --checkpoint: state to resume from (given to retries as TETHER_RESUME_FROM)")
	f.StringArrayVar(&results, "result", nil, "key=value result for the outcome JSON (repeatable)")
	f.StringVar(&message, "message", "", "a message (alone, or with another event)")
	return c
}

func checkFraction(flag string, f float64) error {
	if math.IsNaN(f) || f < 0 || f > 1 {
		return usageError{fmt.Errorf("%s %v: want a fraction between 0 and 1", flag, f)}
	}
	return nil
}

func atoi(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}

// rankFromEnv finds the MPI rank the launchers export.
func rankFromEnv(getenv func(string) string) (int, bool) {
	for _, k := range []string{"OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK", "SLURM_PROCID", "PALS_RANKID"} {
		if v := getenv(k); v != "" {
			if n, err := strconv.Atoi(v); err == nil {
				return n, true
			}
		}
	}
	return 0, false
}
