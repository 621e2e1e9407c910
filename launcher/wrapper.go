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
	tetherPath string            // the tether the Task calls (TETHER_BIN)
	elemEnv    map[string]string // an array element's TETHER_ARRAY_* and TETHER_PARAM*
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
//
// The wrapper runs the Task through an intermediate shell in a process
// group of its own. The intermediate runs the Task in the foreground,
// ignores the forwarded signals (its traps do nothing, and the Task gets
// the default actions back) and writes the Task's exit status to a file:
// a scheduler that signals every process of the job at once (proctrack
// cgroup, PBS) can interrupt the wrapper's wait, and bash 5.2 then loses
// the status it had reaped, but never the file.
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
	for _, k := range sortedKeys(in.elemEnv) {
		p("export %s=%s\n", k, Quote(in.elemEnv[k]))
	}
	warn := in.task.Signals.WarnSignalName()
	if warn != "" {
		p("export TETHER_WARN_SIGNAL=%s\n", warn)
	} else {
		p("unset TETHER_WARN_SIGNAL\n")
	}
	p("__tether_dir=%s\n", Quote(in.run.AttemptDir(in.attempt)))
	if in.tetherPath != "" {
		p("export TETHER_BIN=%s\n", Quote(in.tetherPath))
		if filepath.Base(in.tetherPath) == "tether" {
			p("export PATH=%s\":$PATH\"\n", Quote(filepath.Dir(in.tetherPath)))
		} else {
			// the README tells Tasks to call `tether`: give them one
			p("mkdir -p -- \"$__tether_dir/bin\" && ln -sfn -- \"$TETHER_BIN\" \"$__tether_dir/bin/tether\" && export PATH=\"$__tether_dir/bin:$PATH\"\n")
		}
	} else {
		p("unset TETHER_BIN\n")
	}
	// the wrapper's own tools, whatever the Task's env does to PATH
	p("__tether_path=$PATH\n")
	omp := rankEnv(in.task, in.site)
	for _, k := range sortedKeys(omp) {
		p("export %s=%s\n", k, Quote(omp[k]))
	}
	for _, k := range sortedKeys(in.site.MPI.Env) {
		p("export %s=%s\n", k, Quote(in.site.MPI.Env[k]))
	}
	for _, k := range sortedKeys(in.task.Env) {
		p("export %s=%s\n", k, Quote(in.task.Env[k]))
	}
	for _, k := range sortedKeys(in.task.EnvPrepend) {
		p("export %s=%s\"${%s:+:$%s}\"\n", k, Quote(in.task.EnvPrepend[k]), k, k)
	}
	p("__tether_workdir=%s\n", Quote(in.task.Workdir))
	// TERM and INT go to every process of a Task without an MPI launcher,
	// to the launcher (which forwards them to its ranks) otherwise; the
	// warning goes to the Task's main process unless it asks for its group
	mpi := ChooseLauncher(in.task, in.site) != schema.LauncherNone
	p("__tether_term_group=%s\n", map[bool]string{true: "0", false: "1"}[mpi])
	p("__tether_warn_group=%s\n", map[bool]string{true: "1", false: "0"}[in.task.Signals.WarnTarget == "group"])
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
	// Traps, in a function: the site prologue may replace them, and they
	// are set again after it. TERM and INT are always forwarded; the warn
	// signal is recorded and forwarded too. Before the Task starts, TERM
	// and INT end the wrapper at once. TERM also leaves a provisional exit
	// record: the SIGKILL that follows it leaves the wrapper no time.
	p("__tether_traps() {\n")
	for _, sig := range []struct{ name, code string }{{"TERM", "143"}, {"INT", "130"}} {
		mark := ""
		if sig.name == warn { // refused by validation; kept for older runs
			mark = " __tether_warned=true;"
		}
		if sig.name == "TERM" {
			// when SIGTERM came tells a walltime kill from others, even
			// after the job has left the scheduler
			mark += ` [ -n "$__tether_term" ] || __tether_term=$SECONDS;`
		}
		p("\ttrap '__tether_interrupted=1;%s __tether_signal %s $__tether_term_group || { __tether_rc=%s; exit %s; }", mark, sig.name, sig.code, sig.code)
		if sig.name == "TERM" {
			p("; __tether_record %s true", sig.code)
		}
		p("' %s\n", sig.name)
	}
	if warn != "" && warn != "TERM" && warn != "INT" {
		// the Task gets the first warning only (the scheduler's or the
		// timer's, whichever comes first)
		p("\ttrap '__tether_interrupted=1; __tether_warned=true; [ -n \"$__tether_warn_sent\" ] || { __tether_signal %s $__tether_warn_group main && __tether_warn_sent=1; } || :' %s\n", warn, warn)
	}
	p("\ttrap __tether_on_exit EXIT\n}\n__tether_traps\n")
	// a job the scheduler restarted reuses this directory: the exit file
	// of its earlier run must not speak for this one
	p("PATH=$__tether_path rm -f -- \"$__tether_dir/exitcode\"\n")
	if warn != "" {
		// A timer from the wrapper's start (about the job's start) warns
		// too: some schedulers cannot warn the batch script (PBS,
		// slurmrestd v0.0.38), and Slurm's warning is best effort (sent
		// at a time-limit check about every 30 s; a job on the 22.05 test
		// cluster got none before its walltime).
		after := in.task.Resources.Walltime.D() - in.task.Signals.WarnBefore.D()
		p("( PATH=$__tether_path exec sleep %d ) </dev/null >/dev/null 2>&1 && kill -s %s $$ 2>/dev/null &\n__tether_timer=$!\n", int(after.Seconds()), warn)
	}
	if !in.site.Retry.Requeue {
		// tether owns retries: a restart the scheduler made on its own
		// (slurmrestd 22.05 ignores requeue=false) runs nothing and says so
		p("if [ \"${SLURM_RESTART_COUNT:-0}\" -gt 0 ]; then __tether_requeued=true; echo \"tether: the scheduler requeued this job; tether starts its own attempt instead\" >&2; __tether_rc=0; exit 0; fi\n")
	}
	p("cd -- \"$__tether_workdir\" || __tether_fail \"cannot change to workdir $__tether_workdir\"\n")
	if strings.TrimSpace(in.site.Prologue) != "" {
		// The prologue runs in the wrapper's shell (module load changes
		// its environment), as a function called where set -e is ignored;
		// the shell options and traps are restored after it.
		p("# site prologue\n__tether_prologue() {\n%s\n}\n", strings.TrimRight(in.site.Prologue, "\n"))
		b.WriteString(wrapperPrologue)
	}
	p("__tether_started %s\n", n)
	b.WriteString(strings.ReplaceAll(wrapperLaunch, "__TETHER_UMASK__", umask))
	return b.String()
}

// wrapperBody defines the helpers. It expands only tether's own variables.
// External commands run with the wrapper's own PATH.
const wrapperBody = `__tether_child=
__tether_pid=
__tether_rc=
__tether_error=
__tether_warned=false
__tether_warn_sent=
__tether_interrupted=0
__tether_esc() {
	local s=$1
	s=${s//\\/\\\\}; s=${s//\"/\\\"}
	s=${s//$'\n'/\\n}; s=${s//$'\r'/\\r}; s=${s//$'\t'/\\t}
	printf '%s' "$s"
}
__tether_now() { PATH=$__tether_path date -u +%Y-%m-%dT%H:%M:%S.%NZ; }
__tether_put() {
	local tmp="$__tether_dir/.$1.$$"
	( umask __TETHER_UMASK__; printf '%s\n' "$2" > "$tmp" ) && PATH=$__tether_path mv -f -- "$tmp" "$__tether_dir/$1"
}
__tether_timer=
__tether_term=
__tether_requeued=false
# __tether_record RC [provisional] writes the exit file.
__tether_record() {
	local rc=$1 sig=0 err=
	if [ "$rc" -gt 128 ] && [ "$rc" -le 192 ]; then sig=$((rc - 128)); fi
	[ -n "$__tether_error" ] && err=",\"error\":\"$(__tether_esc "$__tether_error")\""
	[ -n "$__tether_term" ] && err="$err,\"term_after\":$__tether_term"
	[ "$__tether_requeued" = true ] && err="$err,\"requeued\":true"
	[ "${2:-}" = true ] && err="$err,\"provisional\":true"
	__tether_put exitcode "{\"v\":1,\"time\":\"$(__tether_now)\",\"exit_code\":$rc,\"signal\":$sig,\"warned\":$__tether_warned,\"elapsed\":$SECONDS$err}"
}
__tether_on_exit() {
	local rc=$?
	[ -n "$__tether_timer" ] && kill "$__tether_timer" 2>/dev/null
	[ -n "$__tether_rc" ] && rc=$__tether_rc
	__tether_record "$rc"
}
__tether_fail() {
	__tether_error=$1
	echo "tether: $1" >&2
	__tether_rc=127
	exit 127
}
# __tether_signal SIG GROUP [main]: to the Task's process group (GROUP=1)
# or its main process; "main" signals are not sent before its pid is known.
__tether_signal() {
	[ -n "$__tether_child" ] || return 1
	if [ -z "$__tether_pid" ] && [ -r "$__tether_dir/.task-pid" ]; then
		read -r __tether_pid < "$__tether_dir/.task-pid"
	fi
	if [ "$2" = 1 ]; then
		kill -s "$1" -- "-$__tether_child" 2>/dev/null
	elif [ -n "$__tether_pid" ]; then
		kill -s "$1" "$__tether_pid" 2>/dev/null
	elif [ "${3:-}" = main ]; then
		return 1
	else
		kill -s "$1" -- "-$__tether_child" 2>/dev/null
	fi
	return 0
}
__tether_started() {
	local nodes=${SLURM_JOB_NODELIST:-}
	local PATH=$__tether_path
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

// wrapperPrologue calls the site prologue and restores what it may have
// changed of the wrapper: options (set -e, -u, pipefail...), traps and
// the working directory.
const wrapperPrologue = `__tether_opts=$(set +o; shopt -p)
__tether_prologue || echo "tether: the site prologue returned $?; starting the Task anyway" >&2
eval "$__tether_opts"
__tether_traps
cd -- "$__tether_workdir" || __tether_fail "cannot change to workdir $__tether_workdir"
`

// wrapperLaunch starts the intermediate shell in its own process group and
// waits for it, resuming the wait whenever a forwarded signal interrupts
// it. The Task's status is the intermediate's file when there is one.
const wrapperLaunch = `PATH=$__tether_path rm -f -- "$__tether_dir/.task-rc" "$__tether_dir/.task-pid" 2>/dev/null
set -m
(
	trap : TERM INT HUP QUIT USR1 USR2 ALRM URG CONT
	__tether_umask=$(umask)
	(
		umask __TETHER_UMASK__; printf '%s\n' "$BASHPID" > "$__tether_dir/.task-pid"; umask "$__tether_umask"
		exec "${__tether_cmd[@]}"
	) </dev/null
	__tether_rc=$?
	umask __TETHER_UMASK__; printf '%s\n' "$__tether_rc" > "$__tether_dir/.task-rc"
	exit "$__tether_rc"
) &
__tether_child=$!
set +m
while :; do
	__tether_interrupted=0
	wait "$__tether_child"
	__tether_rc=$?
	[ "$__tether_interrupted" = 1 ] || break
done
if [ -r "$__tether_dir/.task-rc" ]; then
	read -r __tether_rc < "$__tether_dir/.task-rc" || :
fi
exit "$__tether_rc"
`
