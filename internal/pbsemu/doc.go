// Package pbsemu is a test-only emulator of the OpenPBS 23.06 command line:
// qsub, qstat, qdel (plus qrls, qselect, pbsnodes) talking to an emulated
// pbs_server that runs jobs as local processes through a per-job
// supervisor (the emulated MoM). It reproduces the output formats, error
// messages, exit codes, job states and substates, Exit_status values and
// job environment captured from a real OpenPBS server (testdata/), so that
// tether's PBS backend can be tested without PBS. The program is
// cmd/pbsemu; package pbsemutest starts instances from Go tests.
package pbsemu
