package local

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"syscall"
)

// procStat is what tether needs from /proc/<pid>/stat.
type procStat struct {
	pid     int
	state   byte
	session int
	start   uint64 // clock ticks since boot; guards against pid reuse
}

func readStat(pid int) (procStat, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procStat{}, err
	}
	// The command name is in parentheses and may contain spaces or ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return procStat{}, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	f := bytes.Fields(b[i+2:])
	// f[0] is field 3 (state); session is field 6, starttime field 22.
	if len(f) < 20 {
		return procStat{}, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	sess, _ := strconv.Atoi(string(f[3]))
	start, _ := strconv.ParseUint(string(f[19]), 10, 64)
	return procStat{pid: pid, state: f[0][0], session: sess, start: start}, nil
}

// alive reports whether pid is still the process that started at start
// (and is not a zombie).
func alive(pid int, start uint64) bool {
	if pid <= 0 {
		return false
	}
	st, err := readStat(pid)
	if err != nil {
		return false
	}
	return st.start == start && st.state != 'Z' && st.state != 'X'
}

// startTime returns the start time of a process, 0 if it is gone.
func startTime(pid int) uint64 {
	st, err := readStat(pid)
	if err != nil {
		return 0
	}
	return st.start
}

// sessionMembers lists the live processes of a session.
func sessionMembers(sid int) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, err := readStat(pid)
		if err != nil || st.session != sid || st.state == 'Z' {
			continue
		}
		pids = append(pids, pid)
	}
	return pids
}

// killSession sends sig to every process of a session except the caller.
func killSession(sid int, sig syscall.Signal) int {
	self := os.Getpid()
	n := 0
	for _, pid := range sessionMembers(sid) {
		if pid == self {
			continue
		}
		if syscall.Kill(pid, sig) == nil {
			n++
		}
	}
	return n
}
