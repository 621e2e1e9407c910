package local

import "testing"

func TestMemoryMount(t *testing.T) {
	v1 := []byte(`24 30 0:22 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
25 24 0:23 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
26 24 0:24 / /sys/fs/cgroup/memory rw,relatime shared:9 - cgroup cgroup rw,memory
27 24 0:25 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
`)
	if m, ok := memoryMount(v1); !ok || m.dir != "/sys/fs/cgroup/memory" || m.v2 {
		t.Errorf("v1: %+v %v", m, ok)
	}
	v2 := []byte("30 1 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n")
	if m, ok := memoryMount(v2); !ok || m.dir != "/sys/fs/cgroup" || !m.v2 {
		t.Errorf("v2: %+v %v", m, ok)
	}
	if _, ok := memoryMount([]byte("22 1 8:1 / / rw - ext4 /dev/sda1 rw\n")); ok {
		t.Error("found a memory hierarchy where none is mounted")
	}
}

func TestOwnCgroup(t *testing.T) {
	pc := []byte("9:name=systemd:/\n4:memory:/process_api/ae86\n1:cpu:/\n0::/user.slice/x.scope\n")
	if got := ownCgroup(pc, false); got != "/process_api/ae86" {
		t.Errorf("v1: %q", got)
	}
	if got := ownCgroup(pc, true); got != "/user.slice/x.scope" {
		t.Errorf("v2: %q", got)
	}
}

func TestCounter(t *testing.T) {
	if n := counter([]byte("oom_kill_disable 0\nunder_oom 0\noom_kill 3\n"), "oom_kill"); n != 3 {
		t.Errorf("v1 oom_control: %d", n)
	}
	if n := counter([]byte("low 0\nhigh 0\nmax 12\noom 2\noom_kill 1\noom_group_kill 0\n"), "oom_kill"); n != 1 {
		t.Errorf("v2 memory.events: %d", n)
	}
}
