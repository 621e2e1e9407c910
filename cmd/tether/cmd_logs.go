package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/spf13/cobra"
	"github.com/tether-hpc/tether/rundir"
)

func (a *app) logsCmd() *cobra.Command {
	var follow, stderr bool
	var attempt int
	c := &cobra.Command{
		Use:   "logs [flags] RUN",
		Short: "Print a run's stdout (or stderr); -f follows until the run ends",
		Args:  usageArgs(cobra.ExactArgs(1)),
		RunE: func(c *cobra.Command, args []string) error {
			ctx, stop := signalContext(c.Context())
			defer stop()
			s, run, err := a.openRun(args[0])
			if err != nil {
				return err
			}
			if _, run, err = a.pickElement(s, run); err != nil {
				return err
			}
			rec, err := run.Load()
			if err != nil {
				return err
			}
			n := attempt
			if n == 0 {
				if cur := rec.Current(); cur != nil {
					n = cur.N
				}
			}
			if n < 1 || n > len(rec.Attempts) {
				return usageError{fmt.Errorf("run %s has no attempt %d (it has %d)", run.ID, n, len(rec.Attempts))}
			}
			path := run.Stdout(n)
			if stderr {
				path = run.Stderr(n)
			}
			return a.copyLog(ctx, run, path, follow)
		},
	}
	c.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing new output until the run has an outcome")
	c.Flags().BoolVar(&stderr, "stderr", false, "print stderr instead of stdout")
	c.Flags().IntVar(&attempt, "attempt", 0, "attempt number (default the latest)")
	a.elementFlag(c)
	return c
}

// copyLog prints a log file; when following, it prints what is appended
// until the run is decided and the file is drained.
func (a *app) copyLog(ctx context.Context, run rundir.Run, path string, follow bool) error {
	var off int64
	drain := func() error {
		f, err := os.Open(path)
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		defer f.Close()
		if _, err := f.Seek(off, io.SeekStart); err != nil {
			return err
		}
		n, err := io.Copy(a.stdout, f)
		off += n
		return err
	}
	if err := drain(); err != nil || !follow {
		return err
	}
	w, err := fsnotify.NewWatcher()
	if err == nil {
		defer w.Close()
		w.Add(run.Dir)
		w.Add(filepath.Dir(path))
	}
	var events <-chan fsnotify.Event
	if w != nil {
		events = w.Events
	}
	tick := time.NewTicker(500 * time.Millisecond) // stat fallback for network filesystems
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-events:
		case <-tick.C:
		}
		if err := drain(); err != nil {
			return err
		}
		if _, done, _ := run.Outcome(); done {
			return drain()
		}
	}
}
