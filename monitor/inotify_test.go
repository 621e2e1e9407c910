package monitor_test

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// inotifyWatched reports whether an inotify instance of this process
// watches dir: /proc/self/fdinfo lists each watch's inode and device.
func inotifyWatched(dir string) (bool, error) {
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return false, err
	}
	// the kernel's dev_t: major in the high 12 bits, minor in the low 20
	want := fmt.Sprintf("ino:%x sdev:%x", st.Ino, uint64(unix.Major(st.Dev))<<20|uint64(unix.Minor(st.Dev)))
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return false, err
	}
	for _, fd := range fds {
		if link, _ := os.Readlink("/proc/self/fd/" + fd.Name()); link != "anon_inode:inotify" {
			continue
		}
		info, err := os.ReadFile("/proc/self/fdinfo/" + fd.Name())
		if err != nil {
			continue // closed meanwhile
		}
		for _, line := range strings.Split(string(info), "\n") {
			if strings.HasPrefix(line, "inotify wd:") && strings.Contains(line, " "+want+" ") {
				return true, nil
			}
		}
	}
	return false, nil
}

// waitWatched waits until every dir is watched by inotify, failing the
// test (or benchmark) after within.
func waitWatched(tb testing.TB, within time.Duration, dirs ...string) {
	tb.Helper()
	deadline := time.Now().Add(within)
	for _, dir := range dirs {
		for {
			ok, err := inotifyWatched(dir)
			if err != nil {
				tb.Fatalf("inotify watch of %s: %v", dir, err)
			}
			if ok {
				break
			}
			if time.Now().After(deadline) {
				tb.Fatalf("%s is not watched by inotify within %v", dir, within)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
}

// The helper sees a watch being added and removed.
func TestInotifyWatched(t *testing.T) {
	dir := t.TempDir()
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if ok, err := inotifyWatched(dir); ok || err != nil {
		t.Fatalf("watched before any watch: %v %v", ok, err)
	}
	wd, err := unix.InotifyAddWatch(fd, dir, unix.IN_CREATE)
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := inotifyWatched(dir); !ok || err != nil {
		t.Fatalf("watch not seen: %v %v", ok, err)
	}
	if _, err := unix.InotifyRmWatch(fd, uint32(wd)); err != nil {
		t.Fatal(err)
	}
	if ok, err := inotifyWatched(dir); ok || err != nil {
		t.Fatalf("removed watch still seen: %v %v", ok, err)
	}
}
