package rundir

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/tether-hpc/tether/schema"
)

func TestAtomicWriteLeavesNoTemp(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "f.json")
	for i := 0; i < 3; i++ {
		if err := WriteJSON(p, map[string]int{"i": i}); err != nil {
			t.Fatal(err)
		}
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Errorf("temp files left: %v", ents)
	}
	var m map[string]int
	if err := ReadJSON(p, &m); err != nil || m["i"] != 2 {
		t.Errorf("read back %v %v", m, err)
	}
	os.WriteFile(p, []byte("{garbage"), 0o644)
	if err := ReadJSON(p, &m); err == nil {
		t.Error("garbage accepted")
	}
}

func TestStoreRunsKeysActive(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "state"))
	if err != nil {
		t.Fatal(err)
	}
	id := NewRunID("task", time.Now())
	run, err := s.CreateRun(&schema.RunRecord{RunID: id, Task: schema.Task{Name: "task"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Find(id); err != nil {
		t.Error(err)
	}
	if _, err := s.Find(run.Dir); err != nil {
		t.Errorf("find by path: %v", err)
	}
	for _, bad := range []string{"nope", "../etc", "a/../../b"} {
		if _, err := s.Find(bad); !errors.Is(err, ErrNoRun) {
			t.Errorf("Find(%q) = %v, want ErrNoRun", bad, err)
		}
	}
	if err := s.BindKey("dag/run/task", id); err != nil {
		t.Fatal(err)
	}
	if got, ok, _ := s.LookupKey("dag/run/task"); !ok || got != id {
		t.Errorf("LookupKey = %q %v", got, ok)
	}
	s.SetActive(id, "42", "site")
	act, _ := s.Active()
	if act[id] != "42" {
		t.Errorf("active = %v", act)
	}
	s.ClearActive(id)
	if act, _ := s.Active(); len(act) != 0 {
		t.Errorf("active after clear = %v", act)
	}
}

func TestOpenUnwritable(t *testing.T) {
	if os.Geteuid() == 0 {
		// root ignores permissions: use a path below a regular file instead
		f := filepath.Join(t.TempDir(), "file")
		os.WriteFile(f, nil, 0o644)
		if _, err := Open(filepath.Join(f, "state")); !errors.Is(err, ErrStateDir) {
			t.Errorf("want ErrStateDir, got %v", err)
		}
		return
	}
	dir := t.TempDir()
	os.Chmod(dir, 0o500)
	defer os.Chmod(dir, 0o700)
	if _, err := Open(filepath.Join(dir, "state")); !errors.Is(err, ErrStateDir) || !errors.Is(err, os.ErrPermission) {
		t.Errorf("want ErrStateDir and ErrPermission, got %v", err)
	}
}

func TestLockHonoursContext(t *testing.T) {
	p := filepath.Join(t.TempDir(), "lock")
	l, err := LockFile(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := LockFile(ctx, p); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("second lock: %v", err)
	}
	if _, ok, _ := TryLockFile(p); ok {
		t.Error("TryLockFile took a held lock")
	}
}
