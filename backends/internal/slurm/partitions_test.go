package slurm

import (
	"testing"
	"time"
)

// captured from the 24.11 test cluster (scontrol show partition --oneliner)
const partitionsOut = `PartitionName=debug AllowGroups=ALL AllowAccounts=ALL AllowQos=ALL AllocNodes=ALL Default=YES QoS=N/A DefaultTime=01:00:00 DisableRootJobs=NO ExclusiveUser=NO ExclusiveTopo=NO GraceTime=0 Hidden=NO MaxNodes=UNLIMITED MaxTime=1-00:00:00 MinNodes=0 LLN=NO MaxCPUsPerNode=UNLIMITED MaxCPUsPerSocket=UNLIMITED NodeSets=ALL Nodes=vm PriorityJobFactor=1 PriorityTier=1 RootOnly=NO ReqResv=NO OverSubscribe=NO OverTimeLimit=NONE PreemptMode=OFF State=UP TotalCPUs=32 TotalNodes=1 SelectTypeParameters=NONE JobDefaults=(null) DefMemPerNode=UNLIMITED MaxMemPerNode=UNLIMITED TRES=cpu=32,mem=16000M,node=1,billing=32
PartitionName=short AllowGroups=ALL AllowAccounts=ALL AllowQos=ALL AllocNodes=ALL Default=NO QoS=N/A DefaultTime=00:01:00 DisableRootJobs=NO ExclusiveUser=NO ExclusiveTopo=NO GraceTime=0 Hidden=NO MaxNodes=2 MaxTime=00:02:00 MinNodes=0 LLN=NO MaxCPUsPerNode=8 MaxCPUsPerSocket=UNLIMITED NodeSets=ALL Nodes=vm PriorityJobFactor=1 PriorityTier=1 RootOnly=NO ReqResv=NO OverSubscribe=NO OverTimeLimit=NONE PreemptMode=OFF State=DOWN TotalCPUs=32 TotalNodes=1 SelectTypeParameters=NONE JobDefaults=(null) DefMemPerNode=UNLIMITED MaxMemPerNode=4000 TRES=cpu=32,mem=16000M,node=1,billing=32
`

func TestParsePartitions(t *testing.T) {
	p := ParsePartitions(partitionsOut)
	if len(p) != 2 {
		t.Fatalf("%d partitions, want 2: %+v", len(p), p)
	}
	d, s := p[0], p[1]
	if d.Name != "debug" || !d.Default || !d.Up || d.MaxTime != 24*time.Hour || d.MaxNodes != 0 || d.TotalNodes != 1 || d.TotalCPUs != 32 || d.MaxCPUsPerNode != 0 || d.MaxMemPerNodeMiB != 0 {
		t.Errorf("debug: %+v", d)
	}
	if s.Name != "short" || s.Default || s.Up || s.MaxTime != 2*time.Minute || s.MaxNodes != 2 || s.MaxCPUsPerNode != 8 || s.MaxMemPerNodeMiB != 4000 {
		t.Errorf("short: %+v", s)
	}
}
