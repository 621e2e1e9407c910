package slurm

import (
	"strconv"
	"strings"

	"github.com/tether-hpc/tether/backends"
	"github.com/tether-hpc/tether/internal/units"
)

// ParsePartitions reads `scontrol show partition --oneliner`: one
// partition per line, KEY=VALUE fields separated by spaces (values such
// as TRES hold no spaces; JobDefaults=(null) neither).
func ParsePartitions(out string) []backends.Partition {
	var parts []backends.Partition
	for _, line := range strings.Split(out, "\n") {
		kv := map[string]string{}
		for _, f := range strings.Fields(line) {
			if k, v, ok := strings.Cut(f, "="); ok {
				kv[k] = v
			}
		}
		name := kv["PartitionName"]
		if name == "" {
			continue
		}
		state := strings.ToUpper(kv["State"])
		p := backends.Partition{
			Name:       name,
			Default:    kv["Default"] == "YES",
			Up:         state == "UP",
			Inactive:   state == "INACTIVE",
			MaxTime:    units.ParseLimit(kv["MaxTime"]),
			MaxNodes:   count(kv["MaxNodes"]),
			TotalNodes: count(kv["TotalNodes"]),
			TotalCPUs:  count(kv["TotalCPUs"]),

			MaxCPUsPerNode: count(kv["MaxCPUsPerNode"]),
		}
		if m, err := units.ParseMemory(kv["MaxMemPerNode"]); err == nil {
			p.MaxMemPerNodeMiB = m
		}
		parts = append(parts, p)
	}
	return parts
}

// count reads a Slurm count; UNLIMITED, N/A and anything unreadable is 0
// (no limit).
func count(s string) int {
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return 0
	}
	return n
}
