package rundir

import "golang.org/x/sys/unix"

// networkFS maps the statfs magic numbers of shared filesystems, where
// inotify sees only this host's writes, to their names.
var networkFS = map[int64]string{
	0x6969:     "nfs",
	0x0BD00BD0: "lustre",
	0x47504653: "gpfs",
	0x00C36400: "ceph",
	0x19830326: "beegfs",
	0x517B:     "smb",
	0xFF534D42: "cifs",
	0xFE534D42: "smb2",
	0x01021997: "9p",
	0x65735546: "fuse",
	0xAAD7AAEA: "panfs",
}

// NetworkFS names the shared filesystem dir lives on ("nfs", "lustre",
// ...), or "" for a local one (or when it cannot tell).
func NetworkFS(dir string) string {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return ""
	}
	return networkFS[int64(uint32(st.Type))]
}
