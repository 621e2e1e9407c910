package slurm

import (
	"regexp"
	"strings"
)

// refusal is a Slurm error that refuses a job request for good: the
// request itself must change (exit 2). Every other error, including ones
// tether does not know, is transient: the scheduler may accept the same
// request later.
type refusal struct {
	num  int    // Slurm's error number; 0 where it is not the same on every version
	text string // slurm_strerror(num), or its first words
}

// refusals are the definite refusals of a job submit among the errors of
// Slurm's src/common/slurm_errno.c (slurm_errtab[]), with the numbers of
// slurm/slurm_errno.h. The numbers are those of 22.05, 24.11 and master
// alike (checked against each tag); 2167 and up do not exist in 22.05.
// Left out on purpose, because a later submit may succeed: MaxJobCount or
// "Unable to create job record" (2007), nodes busy (2016), the backup
// controller in standby (2027, 2131), partition inactive or down (2070,
// 2101), required node not available (2068), QOS usage threshold (2074),
// submissions disabled (2105), invalid user id (2010: a failing name
// service on the controller looks the same), "Unspecified error" (-1,
// also what a job_submit plugin returns), the communication (1000-1999,
// 5000-5999), authentication (6000-6099) and database (7000-7099) errors.
var refusals = []refusal{
	{2000, "Invalid partition name specified"},
	{2001, "No partition specified or system default partition"},
	{2002, "Access/permission denied"},
	{2003, "User's group not permitted to use this partition"},
	{2004, "Requested nodes not in this partition"},
	{2005, "More processors requested than permitted"},
	{2006, "Node count specification invalid"},
	{2008, "Job size specification needs to be provided"},
	{2009, "Job script not specified"},
	{2012, "Pathname of a file, directory or other parameter too long"},
	{2014, "Requested node configuration is not available"},
	// with EnforcePartLimits a job beyond the partition's limits is
	// refused with this; otherwise it waits (PartitionConfig) and no
	// error is returned
	{2015, "Requested partition configuration not available now"},
	{2018, "Invalid node name specified"},
	{2023, "Task distribution specification invalid"},
	{2025, "Task count specification invalid"},
	{2029, "Invalid feature specification"},
	{2038, "Job dependency problem"},
	{0, "Requested more tasks than available processors"}, // 2041 in 22.05 only
	{2044, "Memory required by task is not available"},
	{2045, "Invalid account or account/partition combination specified"},
	{2048, "Invalid license specification"},
	// also a submit-count limit, which is transient: see SubmitLimit
	{2050, "Job violates accounting/QOS policy"},
	{2051, "Requested time limit is invalid"},
	{2052, "Access denied to requested reservation"},
	{2053, "Requested reservation is invalid"},
	{2054, "Invalid time specified"},
	{2057, "Invalid wckey specification"},
	{2066, "Invalid qos specification"},
	{2069, "CPU count specification invalid"},
	{2071, "Circular job dependency"},
	{2072, "Invalid generic resource (gres) specification"},
	{2081, "Invalid job array specification"},
	{2094, "Burst Buffer request invalid"},
	{2099, "Invalid mcs_label specified"},
	{2102, "Duplicate generic resource (gres) specification"},
	{2114, "Job --batch option is invalid or not a subset of --constraint"},
	{2115, "Invalid Trackable RESource (TRES) specification"},
	{2119, "Invalid GRES specification (with and without type identification)"},
	{2121, "Multiple KNL NUMA and/or MCDRAM constraints require use of a heterogeneous job"},
	{2122, "Requested GRES option unsupported by configured SelectType plugin"},
	{2123, "Invalid --nice value"},
	{2124, "Invalid time-min specification"},
	{2127, "Environment is missing in job"},
	{2130, "Multiple partition job request not supported when a partition is set in the association"},
	{2132, "Cannot request more threads per core than the job allocation"},
	{2133, "Invalid preferred feature specification"},
	{2167, "Invalid or unknown association"},
	{2170, "Invalid QOS specification, relative QOS"},
	{2171, "Invalid extra constraints specification"},
	{2178, "Requested topology configuration is not available"},
	// slurmrestd could not parse the request: it never reached slurmctld,
	// and sending it again cannot help
	{9001, "Failure during parsing"},
	{9002, "Jobs description entry not found"},
	{9202, "Unable to convert Data type"},
	{9206, "Data parser expects flags to be a list"},
	{9207, "Data parser unable to parse invalid flag"},
	{9208, "Data parser expected a list"},
	{9209, "Data parser expected a dictionary or object"},
}

// Refused reports whether a Slurm error number is a definite refusal of a
// job request.
func Refused(num int) bool {
	if num == 0 {
		return false
	}
	for _, r := range refusals {
		if r.num == num {
			return true
		}
	}
	return false
}

// RefusalIn finds the text of a definite refusal in a message (sbatch's
// stderr, a REST error's text) and returns it.
func RefusalIn(msg string) (string, bool) {
	for _, r := range refusals {
		if strings.Contains(msg, r.text) {
			return r.text, true
		}
	}
	return "", false
}

// SubmitLimit reports whether a message names a limit on the number of
// submitted jobs (AssocMaxSubmitJobLimit, QOSMaxSubmitJobPerUserLimit,
// AssocGrpSubmitJobsLimit, ...: job_reason_string()). slurmctld refuses
// such a submit with 2050 "Job violates accounting/QOS policy", like a job
// too large for the limits, but the same request is accepted once some of
// the user's jobs have ended.
func SubmitLimit(msg string) bool { return strings.Contains(msg, "SubmitJob") }

// JobCountLimit reports whether slurmctld turned a submit away because it
// holds MaxJobCount jobs (ESLURM_ERROR_ON_DESC_TO_RECORD_COPY, 2007:
// "Unable to create job record, try again"): no job was created.
func JobCountLimit(msg string) bool { return strings.Contains(msg, "Unable to create job record") }

// sbatchOptionError matches what sbatch prints when it refuses its own
// command line before contacting slurmctld (getopt, and the option parsers
// of src/common/slurm_opt.c, proc_args.c and src/sbatch/opt.c).
var sbatchOptionError = regexp.MustCompile(`(?m)^sbatch: (unrecognized option|invalid option|option .*(requires|allow) an argument|option .* is ambiguous)` +
	`|^sbatch: error: ([Ii]nvalid --|Invalid -W |invalid number of |Invalid TRES for |Invalid node list specified|Invalid directive found in batch script` +
	`|Script arguments not permitted|Numeric argument .* too large|unrecognized --hint)` +
	`|^sbatch: (error|fatal): .*( is not a valid | are mutually exclusive| is mutually exclusive| can not be satisfied)`)

// SbatchRefusal reports whether a failed sbatch's stderr is a definite
// refusal of the request, and returns the words that say so. A
// submit-count limit is not one (SubmitLimit).
func SbatchRefusal(stderr string) (string, bool) {
	if SubmitLimit(stderr) {
		return "", false
	}
	if r, ok := RefusalIn(stderr); ok {
		return r, true
	}
	if m := sbatchOptionError.FindString(stderr); m != "" {
		return strings.TrimSpace(m), true
	}
	return "", false
}
