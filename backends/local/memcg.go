package local

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// memCgroup is the memory cgroup a local job runs in, so that its memory
// request is a limit, as Slurm's task/cgroup (ConstrainRAMSpace) or a PBS
// MoM makes it: the kernel's OOM killer ends a Task that goes past it, and
// the group's own counters say so afterwards. cgroup v1 (memory
// controller) and v2 (memory.max) are both handled.
type memCgroup struct {
	dir string
	v2  bool
}

// cgroupMount is a mounted cgroup hierarchy.
type cgroupMount struct {
	dir string // the hierarchy's mount point
	v2  bool
}

// memoryMount finds the memory controller's hierarchy from
// /proc/self/mountinfo.
func memoryMount(mountinfo []byte) (cgroupMount, bool) {
	var v2 cgroupMount
	found2 := false
	sc := bufio.NewScanner(bytes.NewReader(mountinfo))
	for sc.Scan() {
		// 36 35 0:30 / /sys/fs/cgroup/memory rw,relatime shared:13 - cgroup cgroup rw,memory
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		f, g := strings.Fields(pre), strings.Fields(post)
		if len(f) < 5 || len(g) < 3 {
			continue
		}
		switch g[0] {
		case "cgroup":
			for _, o := range strings.Split(g[2], ",") {
				if o == "memory" {
					return cgroupMount{dir: f[4]}, true
				}
			}
		case "cgroup2":
			if !found2 {
				v2, found2 = cgroupMount{dir: f[4], v2: true}, true
			}
		}
	}
	return v2, found2
}

// ownCgroup is this process's path in the hierarchy (v1: the memory
// line of /proc/self/cgroup; v2: the "0::" line).
func ownCgroup(procCgroup []byte, v2 bool) string {
	for _, line := range strings.Split(string(procCgroup), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		if v2 && parts[0] == "0" && parts[1] == "" {
			return parts[2]
		}
		if !v2 {
			for _, c := range strings.Split(parts[1], ",") {
				if c == "memory" {
					return parts[2]
				}
			}
		}
	}
	return "/"
}

// newMemCgroup makes a memory cgroup for job id with a limit of mib MiB
// under this process's own, or says why it cannot.
func newMemCgroup(id string, mib int64) (*memCgroup, error) {
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	m, ok := memoryMount(mi)
	if !ok {
		return nil, errors.New("no memory cgroup hierarchy is mounted")
	}
	pc, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return nil, err
	}
	cg := &memCgroup{dir: filepath.Join(m.dir, ownCgroup(pc, m.v2), "tether-local-"+id), v2: m.v2}
	if err := os.Mkdir(cg.dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return nil, err
	}
	limit := strconv.FormatInt(mib*1024*1024, 10)
	file := "memory.limit_in_bytes"
	if m.v2 {
		file = "memory.max"
	}
	if err := os.WriteFile(filepath.Join(cg.dir, file), []byte(limit), 0); err != nil {
		cg.remove()
		return nil, fmt.Errorf("set %s: %w", file, err)
	}
	if !m.v2 {
		// no swap beyond the limit, where the kernel accounts swap
		_ = os.WriteFile(filepath.Join(cg.dir, "memory.memsw.limit_in_bytes"), []byte(limit), 0)
	} else {
		_ = os.WriteFile(filepath.Join(cg.dir, "memory.swap.max"), []byte("0"), 0)
	}
	return cg, nil
}

// procsFile is where a process joins the group.
func (c *memCgroup) procsFile() string { return filepath.Join(c.dir, "cgroup.procs") }

// oomKills is how many processes of the group the OOM killer ended.
func (c *memCgroup) oomKills() int {
	file := "memory.oom_control"
	if c.v2 {
		file = "memory.events"
	}
	b, err := os.ReadFile(filepath.Join(c.dir, file))
	if err != nil {
		return 0
	}
	return counter(b, "oom_kill")
}

// peakBytes is the group's highest memory use (0 where not reported).
func (c *memCgroup) peakBytes() int64 {
	file := "memory.max_usage_in_bytes"
	if c.v2 {
		file = "memory.peak"
	}
	b, err := os.ReadFile(filepath.Join(c.dir, file))
	if err != nil {
		return 0
	}
	v, _ := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	return v
}

// counter reads "name N" from a flat-keyed cgroup file.
func counter(b []byte, name string) int {
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), " ")
		if ok && k == name {
			n, _ := strconv.Atoi(strings.TrimSpace(v))
			return n
		}
	}
	return 0
}

// remove deletes the group once its processes are gone (they may take a
// moment to leave after a SIGKILL).
func (c *memCgroup) remove() {
	for i := 0; i < 50; i++ {
		if err := os.Remove(c.dir); err == nil || errors.Is(err, os.ErrNotExist) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}
