// Package rundir owns the on-disk layout of a site's state directory and of
// each run directory: atomic writes (temp file, fsync, rename), flock-based
// locks that honour a context, the append-only status.jsonl protocol with a
// reader that survives torn and garbage lines, the idempotency-key index and
// the index of active runs that a poller batches into one scheduler query.
//
//	<state>/runs/<run-id>/run.json      run record (schema.RunRecord)
//	<state>/runs/<run-id>/status.jsonl  events appended by the Task
//	<state>/runs/<run-id>/outcome.json  final decision (schema.Outcome)
//	<state>/runs/<run-id>/lock          serialises submit and decide
//	<state>/runs/<run-id>/attempts/<n>/ job.sh, task.sh, started, exitcode, stdout, stderr
//	<state>/keys/<sha256(key)>          run id bound to an idempotency key
//	<state>/active/<run-id>             job id of a run that is not final
package rundir
