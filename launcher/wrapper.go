package launcher

import (
	"fmt"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/tether-hpc/tether/rundir"
	"github.com/tether-hpc/tether/schema"
)

// WrapperVersion is the format of the generated job.sh.
const WrapperVersion = 1

// wrapperInput is what one attempt's wrapper needs.
type wrapperInput struct {
	run        rundir.Run
	attempt    int
	task       *schema.Task
	site       *schema.Site
	launch     []word
	resumeFrom string
	tetherDir  string
	warnTimer  bool
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// renderWrapper writes the bash wrapper. Values are single-quoted with
// Quote; the fixed parts use only tether's own variables.
func renderWrapper(in wrapperInput) string {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	n := strconv.Itoa(in.attempt)
	p("#!/bin/bash\n")
	p("# tether wrapper v%d for run %s, attempt %s. Generated; do not edit.\n", WrapperVersion, in.run.ID, n)
	p("# Every value taken from a task or site file is single-quoted below.\n")
	// a job that got none of the submitter's environment ([env]
	// propagate = "none") still finds the system's commands
	p("export PATH=\"${PATH:-/usr/local/bin:/usr/bin:/bin}\"\n")
	p("unset TETHER_TAG\n")
	p("export TETHER_RUN_ID=%s\n", Quote(in.run.ID))
	p("export TETHER_RUN_DIR=%s\n", Quote(in.run.Dir))
	p("export TETHER_STATUS_FILE=%s\n", Quote(in.run.Status()))
	p("export TETHER_ATTEMPT=%s\n", n)
	p("export TETHER_ATTEMPT_DIR=%s\n", Quote(in.run.AttemptDir(in.attempt)))
	if in.resumeFrom != "" {
		p("export TETHER_RESUME_FROM=%s\n", Quote(in.resumeFrom))
	} else {
		p("unset TETHER_RESUME_FROM\n")
	}
	warn := in.task.Signals.WarnSignalName()
	if warn != "" {
		p("export TETHER_WARN_SIGNAL=%s\n", warn)
	}
	if in.tetherDir != "" {
		p("export PATH=%s\":$PATH\"\n", Quote(in.tetherDir))
	}
	for _, k := range sortedKeys(in.site.MPI.Env) {
		p("export %s=%s\n", k, Quote(in.site.MPI.Env[k]))
	}
	for _, k := range sortedKeys(in.task.Env) {
		p("export %s=%s\n", k, Quote(in.task.Env[k]))
	}
	p("__tether_workdir=%s\n", Quote(in.task.Workdir))
	p("__tether_dir=%s\n", Quote(in.run.AttemptDir(in.attempt)))
	group := "1"
	if ChooseLauncher(in.task, in.site) != schema.LauncherNone {
		group = "0" // MPI launchers forward signals to their ranks themselves
	}
	p("__tether_group=%s\n", group)
	p("__tether_cmd=(")
	for i, w := range in.launch {
		if i > 0 {
			p(" ")
		}
		p("%s", w.shell())
	}
	p(")\n")
	// the wrapper's own files get the site's file mode (the Task's
	// outputs keep the job's umask)
	umask := "077"
	if in.site.FileMode == "group" {
		umask = "027"
	}
	b.WriteString(strings.Replace(wrapperBody, "__TETHER_UMASK__", umask, 1))
	// Traps: TERM and INT are always forwarded; the warn signal is recorded
	// and forwarded too (it may be TERM or INT itself).
	// Before the Task starts, TERM and INT end the wrapper at once.
	for _, sig := range []struct{ name, code string }{{"TERM", "143"}, {"INT", "130"}} {
		mark := ""
		if sig.name == warn {
			mark = " __tether_warned=true;"
		}
		if sig.name == "TERM" {
			// when SIGTERM came tells a walltime kill from others, even
			// after the job has left the scheduler
			mark += ` [ -n "$__tether_term" ] || __tether_term=$SECONDS;`
		}
		p("trap '__tether_interrupted=1;%s __tether_signal %s || { __tether_rc=%s; exit %s; }' %s\n", mark, sig.name, sig.code, sig.code, sig.name)
	}
	if warn != "" && warn != "TERM" && warn != "INT" {
		p("trap '__tether_interrupted=1; __tether_warned=true; __tether_signal %s || :' %s\n", warn, warn)
	}
	if in.warnTimer && warn != "" {
		// The scheduler cannot warn the batch script: a timer does, from
		// the wrapper's start (about the job's start).
		after := in.task.Resources.Walltime.D() - in.task.Signals.WarnBefore.D()
		p("( sleep %d && kill -s %s $$ ) </dev/null >/dev/null 2>&1 &\n__tether_timer=$!\n", int(after.Seconds()), warn)
	}
	if !in.site.Retry.Requeue {
		// tether owns retries: a restart the scheduler made on its own
		// (slurmrestd 22.05 ignores requeue=false) runs nothing and says so
		p("if [ \"${SLURM_RESTART_COUNT:-0}\" -gt 0 ]; then __tether_requeued=true; echo \"tether: the scheduler requeued this job; tether starts its own attempt instead\" >&2; __tether_rc=0; exit 0; fi\n")
	}
	p("cd -- \"$__tether_workdir\" || __tether_fail \"cannot change to workdir $__tether_workdir\"\n")
	if in.site.Prologue != "" {
		p("# site prologue\n%s\n", strings.TrimRight(in.site.Prologue, "\n"))
	}
	p("__tether_started %s\n", n)
	b.WriteString(wrapperLaunch)
	return b.String()
}

// wrapperBody defines the helpers. It expands only tether's own variables.
const wrapperBody = `__tether_child=
__tether_rc=
__tether_error=
__tether_warned=false
__tether_interrupted=0
__tether_esc() {
	local s=$1
	s=${s//\\/\\\\}; s=${s//\"/\\\"}
	s=${s//$'\n'/\\n}; s=${s//$'\r'/\\r}; s=${s//$'\t'/\\t}
	printf '%s' "$s"
}
__tether_now() { date -u +%Y-%m-%dT%H:%M:%S.%NZ; }
__tether_put() {
	local tmp="$__tether_dir/.$1.$$"
	( umask __TETHER_UMASK__; printf '%s\n' "$2" > "$tmp" ) && mv -f -- "$tmp" "$__tether_dir/$1"
}
__tether_timer=
__tether_term=
__tether_requeued=false
__tether_on_exit() {
	local rc=$?
	[ -n "$__tether_timer" ] && kill "$__tether_timer" 2>/dev/null
	[ -n "$__tether_rc" ] && rc=$__tether_rc
	local sig=0 err=
	if [ "$rc" -gt 128 ] && [ "$rc" -le 192 ]; then sig=$((rc - 128)); fi
	[ -n "$__tether_error" ] && err=",\"error\":\"$(__tether_esc "$__tether_error")\""
	[ -n "$__tether_term" ] && err="$err,\"term_after\":$__tether_term"
	[ "$__tether_requeued" = true ] && err="$err,\"requeued\":true"
	__tether_put exitcode "{\"v\":1,\"time\":\"$(__tether_now)\",\"exit_code\":$rc,\"signal\":$sig,\"warned\":$__tether_warned,\"elapsed\":$SECONDS$err}"
}
trap __tether_on_exit EXIT
__tether_fail() {
	__tether_error=$1
	echo "tether: $1" >&2
	__tether_rc=127
	exit 127
}
__tether_signal() {
	[ -n "$__tether_child" ] || return 1
	if [ "$__tether_group" = 1 ]; then
		kill -s "$1" -- "-$__tether_child" 2>/dev/null || kill -s "$1" "$__tether_child" 2>/dev/null
	else
		kill -s "$1" "$__tether_child" 2>/dev/null
	fi
	return 0
}
__tether_started() {
	local nodes=${SLURM_JOB_NODELIST:-}
	if [ -n "$nodes" ] && command -v scontrol >/dev/null 2>&1; then
		# node[1-3] -> node1,node2,node3
		nodes=$(scontrol show hostnames "$nodes" 2>/dev/null | paste -sd, -) || nodes=${SLURM_JOB_NODELIST:-}
		[ -n "$nodes" ] || nodes=${SLURM_JOB_NODELIST:-}
	fi
	if [ -z "$nodes" ] && [ -n "${PBS_NODEFILE:-}" ] && [ -r "$PBS_NODEFILE" ]; then
		nodes=$(sort -u "$PBS_NODEFILE" | paste -sd, -)
	fi
	local host
	host=$(hostname)
	[ -n "$nodes" ] || nodes=$host
	local job=${SLURM_JOB_ID:-${PBS_JOBID:-${TETHER_LOCAL_JOB_ID:-}}}
	__tether_put started "{\"v\":1,\"time\":\"$(__tether_now)\",\"host\":\"$(__tether_esc "$host")\",\"nodes\":\"$(__tether_esc "$nodes")\",\"job_id\":\"$(__tether_esc "$job")\",\"attempt\":$1,\"pid\":$$}"
}
`

// wrapperLaunch starts the Task in its own process group and waits for it,
// resuming the wait whenever a forwarded signal interrupts it.
const wrapperLaunch = `set -m
"${__tether_cmd[@]}" </dev/null &
__tether_child=$!
set +m
while :; do
	__tether_interrupted=0
	wait "$__tether_child"
	__tether_rc=$?
	[ "$__tether_interrupted" = 1 ] || break
done
exit "$__tether_rc"
`

// tetherDirFor is the directory to put on the Task's PATH for `tether report`.
func tetherDirFor(path string) string {
	if path == "" {
		return ""
	}
	return filepath.Dir(path)
}
