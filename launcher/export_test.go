package launcher

import (
	"context"
	"time"
)

// TakeSlot books a pace slot without waiting for it (for tests).
func TakeSlot(p *Pace, ctx context.Context) (time.Time, error) { return p.take(ctx) }
