// Package launcher turns a task spec and a site into an attempt: the bash
// wrapper (job.sh) that every batch backend runs, the MPI command line
// (srun, mpiexec, mpirun or none), and a backend-neutral JobRequest. It
// submits the attempt through a backend and records it in the run.
//
// The wrapper exports TETHER_RUN_ID, TETHER_RUN_DIR, TETHER_STATUS_FILE,
// TETHER_ATTEMPT and, on resumed attempts, TETHER_RESUME_FROM; writes
// `started`; runs the command through the launcher; forwards SIGTERM,
// SIGINT and the warn signal to the Task; writes `exitcode` from an EXIT
// trap; and exits with the Task's status. Every user-provided string is
// single-quoted, so no shell metacharacter changes what runs.
package launcher
