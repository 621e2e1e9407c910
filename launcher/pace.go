package launcher

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"time"

	"github.com/tether-hpc/tether/rundir"
)

// paceVersion is the format of <state>/poll/submit-<site>.json.
const paceVersion = 1

// Pace spaces a site's submits at most Rate per second apart, for every
// tether process sharing the state directory: each submit takes the next
// free slot under a file lock and waits for it.
type Pace struct {
	Path string
	Rate float64 // submits per second; 0: no pacing
	Now  func() time.Time
}

type paceFile struct {
	V    int       `json:"v"`
	Next time.Time `json:"next"` // the first free slot
}

// Wait blocks until this submit's slot (at once without pacing).
func (p *Pace) Wait(ctx context.Context) error {
	if p == nil || p.Rate <= 0 {
		return nil
	}
	slot, err := p.take(ctx)
	if err != nil {
		return err
	}
	d := slot.Sub(p.Now())
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// take books the next free slot.
func (p *Pace) take(ctx context.Context) (time.Time, error) {
	if err := os.MkdirAll(filepath.Dir(p.Path), 0o700); err != nil {
		return time.Time{}, err
	}
	lock, err := rundir.LockFile(ctx, p.Path+".lock")
	if err != nil {
		return time.Time{}, err
	}
	defer lock.Unlock()
	var f paceFile
	if err := rundir.ReadJSON(p.Path, &f); err != nil && !errors.Is(err, os.ErrNotExist) || f.V != paceVersion {
		f = paceFile{V: paceVersion} // unreadable or another format: start afresh
	}
	now := p.Now()
	slot := f.Next
	if slot.Before(now) {
		slot = now
	}
	f.Next = slot.Add(time.Duration(float64(time.Second) / p.Rate))
	return slot, rundir.WriteJSON(p.Path, f)
}
