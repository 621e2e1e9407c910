package health

import (
	"context"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/tether-hpc/tether/schema"
)

// A node is listed at its second failure within the window, stays listed
// for exclude_for, and failures older than the window do not count.
func TestBadNodeList(t *testing.T) {
	now := time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)
	l := &List{Path: filepath.Join(t.TempDir(), "health", "bad.json"),
		Policy: schema.SiteBadNodes{After: 2, Within: schema.Duration(time.Hour), ExcludeFor: schema.Duration(6 * time.Hour)},
		Now:    func() time.Time { return now }}
	ctx := context.Background()
	if got, err := l.Record(ctx, []string{"n2"}); err != nil || len(got) != 0 {
		t.Fatalf("first failure: %v %v", got, err)
	}
	now = now.Add(30 * time.Minute)
	if got, err := l.Record(ctx, []string{"n2", "n3"}); err != nil || !slices.Equal(got, []string{"n2"}) {
		t.Fatalf("second failure within the window: %v %v", got, err)
	}
	if ex, _ := l.Excluded(); !slices.Equal(ex, []string{"n2"}) {
		t.Errorf("excluded %v", ex)
	}
	// n3's first failure leaves the window before its second
	now = now.Add(90 * time.Minute)
	if got, _ := l.Record(ctx, []string{"n3"}); len(got) != 0 {
		t.Errorf("n3 listed from failures 90 minutes apart: %v", got)
	}
	nodes, _ := l.Nodes()
	if len(nodes) != 1 || nodes[0].Name != "n2" || !nodes[0].Until.Equal(now.Add(-90*time.Minute).Add(6*time.Hour)) {
		t.Errorf("%+v", nodes)
	}
	now = now.Add(5 * time.Hour)
	if ex, _ := l.Excluded(); len(ex) != 0 {
		t.Errorf("still excluded after exclude_for: %v", ex)
	}
	var off *List
	if got, err := off.Record(ctx, []string{"n1"}); got != nil || err != nil {
		t.Error("a site without a list recorded")
	}
}
