package launcher

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/tether-hpc/tether/backends"
	"github.com/tether-hpc/tether/rundir"
	"github.com/tether-hpc/tether/schema"
)

// partitionsVersion is the format of <state>/poll/partitions-<site>.json.
const partitionsVersion = 1

// partitionCache is the site's partition list as last read, shared by
// every tether process of the site.
type partitionCache struct {
	V          int                  `json:"v"`
	At         time.Time            `json:"at"`
	Partitions []backends.Partition `json:"partitions"`
}

// Limits places requests in the scheduler's partitions (queues) before
// they are submitted: it refuses what can never run and resolves
// partition = "auto". The partition list is read at most once per
// CacheFor for the whole site.
type Limits struct {
	Lister backends.PartitionLister
	// Path is the shared cache file.
	Path     string
	CacheFor time.Duration
	// Refuse: check requests that name their partition (or none); without
	// it only partition = "auto" reads the limits.
	Refuse bool
	// Candidates are the site's candidates for partition = "auto".
	Candidates []string
	Now        func() time.Time
	Log        *slog.Logger // nil: quiet
}

// NewLimits returns the site's Limits, or nil where the backend cannot
// list partitions.
func NewLimits(site *schema.Site, store *rundir.Store, b backends.Backend, now func() time.Time, log *slog.Logger) *Limits {
	l, ok := b.(backends.PartitionLister)
	if !ok {
		return nil
	}
	return &Limits{Lister: l, Path: filepath.Join(store.Dir, "poll", "partitions-"+site.Name+".json"),
		CacheFor: site.Limits.CacheFor.D(), Refuse: site.CheckLimits(), Candidates: site.Limits.Partitions, Now: now, Log: log}
}

// Partitions returns the site's partitions, from the shared cache while
// it is fresh.
func (l *Limits) Partitions(ctx context.Context) ([]backends.Partition, error) {
	if raw, err := os.ReadFile(l.Path); err == nil {
		var c partitionCache
		if json.Unmarshal(raw, &c) == nil && c.V == partitionsVersion && l.Now().Sub(c.At) < l.CacheFor && len(c.Partitions) > 0 {
			return c.Partitions, nil
		}
	}
	parts, err := l.Lister.Partitions(ctx)
	if err != nil {
		return nil, err
	}
	if len(parts) == 0 {
		return nil, fmt.Errorf("%w: the scheduler listed no partitions", backends.ErrUnavailable)
	}
	raw, err := json.Marshal(partitionCache{V: partitionsVersion, At: l.Now().UTC(), Partitions: parts})
	if err == nil {
		if err := os.MkdirAll(filepath.Dir(l.Path), 0o700); err == nil {
			err = rundir.WriteFileReplace(l.Path, raw, 0o600)
		}
		if err != nil && l.Log != nil {
			l.Log.Warn("could not keep the partition list", "err", err)
		}
	}
	return parts, nil
}

// Place decides where a request goes. A request that can never run is
// refused (backends.ErrRejected). When the limits cannot be read the
// request goes unchecked (the scheduler still refuses what it refuses),
// except partition = "auto", which cannot be resolved without them.
func (l *Limits) Place(ctx context.Context, req backends.JobRequest) (Placement, error) {
	if l == nil {
		if req.Partition == AutoPartition {
			return Placement{Why: "partition = auto: this backend has no partitions"}, nil
		}
		return Placement{Partition: req.Partition}, nil
	}
	if !l.Refuse && req.Partition != AutoPartition {
		return Placement{Partition: req.Partition, Why: "limits not checked ([limits] check = false)"}, nil
	}
	parts, err := l.Partitions(ctx)
	if err != nil {
		if req.Partition == AutoPartition {
			return Placement{}, fmt.Errorf("partition = auto: cannot read the scheduler's partitions: %w", err)
		}
		if l.Log != nil && !errors.Is(err, context.Canceled) {
			l.Log.Warn("could not read the scheduler's partition limits; submitting without checking them", "err", err)
		}
		return Placement{Partition: req.Partition, Why: "limits unknown: " + err.Error()}, nil
	}
	return Fit(req, parts, l.Candidates)
}
