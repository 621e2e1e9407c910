package sim

import (
	"fmt"
	"os"
)

// recorder collects a schedule's failures off the test goroutine; the
// test goroutine reports them (no t.Error from workers' schedules).
type recorder struct{ errs []string }

func (r *recorder) Errorf(format string, args ...any) {
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}
func (r *recorder) Helper() {}

// play runs one seeded schedule to its end in dir (made and removed
// here); mutate may break the world first (the self-test).
func play(tb TB, seed uint64, steps int, dir string, mutate ...func(*World)) *World {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	w := New(tb, seed, dir)
	for _, m := range mutate {
		m(w)
	}
	for i := 0; i < steps && !w.Failed(); i++ {
		w.Step()
	}
	if !w.Failed() {
		w.Quiesce()
	}
	return w
}
