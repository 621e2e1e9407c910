package pbsemu

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// PBS error numbers (pbs_error.h). A command exits with the number modulo
// 256, which is how qstat's 153 (Unknown Job Id) and 35 (Job has finished)
// come about.
const (
	pbseUnkJobID          = 15001
	pbseIvalReq           = 15004
	pbseSystem            = 15010
	pbseBadAtVal          = 15014
	pbseBadState          = 15016
	pbseUnkQue            = 15018
	pbseBadUser           = 15023
	pbseProtocol          = 15031
	pbseUnkResc           = 15035
	pbseExcQResc          = 15036
	pbseBadDepend         = 15054
	pbseMaxArraySize      = 15107
	pbseHistJobID         = 15139
	pbseHistJobDel        = 15158
	pbseNoHistArraySubjob = 15159
	pbseNotArrayAttr      = 15231
)

// exitCode maps a PBS error number to a process exit status.
func exitCode(errno int) int { return errno & 0xff }

// pbseText is pbse_to_txt for the numbers the emulator produces.
func pbseText(errno int) string {
	switch errno {
	case pbseUnkJobID:
		return "Unknown Job Id"
	case pbseIvalReq:
		return "Invalid request"
	case pbseSystem:
		return "System error"
	case pbseBadAtVal:
		return "Illegal attribute or resource value"
	case pbseBadState:
		return "Request invalid for state of job"
	case pbseUnkQue:
		return "Unknown queue"
	case pbseBadUser:
		return "Bad UID for job execution"
	case pbseProtocol:
		return "Batch protocol error"
	case pbseUnkResc:
		return "Unknown resource"
	case pbseExcQResc:
		return "Job violates queue and/or server resource limits"
	case pbseBadDepend:
		return "Invalid Job Dependency" // msg_baddepend (pbs_messages.c)
	case pbseHistJobID:
		return "Job has finished"
	case pbseMaxArraySize:
		return "Array job exceeds server or queue size limit"
	case pbseNoHistArraySubjob:
		return "Request invalid for finished array subjob"
	case pbseNotArrayAttr:
		return "Attribute has to be set on an array job"
	}
	return fmt.Sprintf("Error %d", errno)
}

// knownResources are the job-wide resources the emulator accepts in -l.
var knownResources = map[string]bool{
	"select": true, "place": true, "walltime": true, "ncpus": true, "mem": true,
	"vmem": true, "ngpus": true, "cput": true, "pcput": true, "pmem": true,
	"pvmem": true, "nodes": true, "software": true, "file": true, "arch": true,
	"host": true, "vnode": true, "nice": true, "mpiprocs": true, "ompthreads": true,
	"nodect": true, "naccelerators": true, "accelerator": true, "max_walltime": true,
	"min_walltime": true, "preempt_targets": true, "site": true,
}

// chunkResources are the resources allowed inside a select chunk.
var chunkResources = map[string]bool{
	"ncpus": true, "mem": true, "vmem": true, "ngpus": true, "mpiprocs": true,
	"ompthreads": true, "host": true, "vnode": true, "arch": true,
	"naccelerators": true, "accelerator": true, "accelerator_model": true,
	"accelerator_memory": true,
}

// parseDuration parses a PBS time value: [[HH:]MM:]SS[.ms]. It returns seconds.
func parseDuration(s string) (int, bool) {
	if s == "" {
		return 0, false
	}
	frac := ""
	if i := strings.IndexByte(s, '.'); i >= 0 {
		frac = s[i+1:]
		s = s[:i]
		if _, err := strconv.Atoi(frac); err != nil || frac == "" {
			return 0, false
		}
	}
	parts := strings.Split(s, ":")
	if len(parts) > 3 {
		return 0, false
	}
	total := 0
	for _, p := range parts {
		if p == "" {
			return 0, false
		}
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 || strings.ContainsAny(p, "+-") {
			return 0, false
		}
		total = total*60 + n
	}
	return total, true
}

// formatDuration prints seconds as HH:MM:SS (hours may exceed 99).
func formatDuration(sec int) string {
	if sec < 0 {
		sec = 0
	}
	return fmt.Sprintf("%02d:%02d:%02d", sec/3600, sec/60%60, sec%60)
}

var sizeUnits = []struct {
	suffix string
	mult   int64
}{
	{"tb", 1 << 40}, {"gb", 1 << 30}, {"mb", 1 << 20}, {"kb", 1 << 10}, {"b", 1},
	{"tw", 8 << 40}, {"gw", 8 << 30}, {"mw", 8 << 20}, {"kw", 8 << 10}, {"w", 8},
}

// parseSize parses a PBS size (e.g. "4gb", "512mb", "100") into bytes.
func parseSize(s string) (int64, bool) {
	ls := strings.ToLower(s)
	mult := int64(1)
	num := ls
	for _, u := range sizeUnits {
		if strings.HasSuffix(ls, u.suffix) {
			num = strings.TrimSuffix(ls, u.suffix)
			mult = u.mult
			break
		}
	}
	if num == "" {
		return 0, false
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n < 0 {
		return 0, false
	}
	return n * mult, true
}

// formatSize prints bytes in the largest unit that divides them exactly.
func formatSize(b int64) string {
	for _, u := range []struct {
		s string
		m int64
	}{{"tb", 1 << 40}, {"gb", 1 << 30}, {"mb", 1 << 20}, {"kb", 1 << 10}} {
		if b >= u.m && b%u.m == 0 {
			return fmt.Sprintf("%d%s", b/u.m, u.s)
		}
	}
	if b == 0 {
		return "0kb"
	}
	return fmt.Sprintf("%db", b)
}

// Chunk is one select chunk: Count copies of the resources.
type Chunk struct {
	Count int      `json:"count"`
	Res   []KeyVal `json:"res"`
}

// KeyVal is an ordered name=value pair.
type KeyVal struct {
	K string `json:"k"`
	V string `json:"v"`
}

func (c Chunk) get(name string) (string, bool) {
	for _, kv := range c.Res {
		if kv.K == name {
			return kv.V, true
		}
	}
	return "", false
}

func (c Chunk) intRes(name string, def int) int {
	if v, ok := c.get(name); ok {
		n, _ := strconv.Atoi(v)
		return n
	}
	return def
}

func (c Chunk) sizeRes(name string) int64 {
	if v, ok := c.get(name); ok {
		n, _ := parseSize(v)
		return n
	}
	return 0
}

func (c Chunk) String() string {
	var b strings.Builder
	b.WriteString(strconv.Itoa(c.Count))
	for _, kv := range c.Res {
		b.WriteString(":" + kv.K + "=" + kv.V)
	}
	return b.String()
}

// resError is a rejection of a resource request: errno plus qsub's message.
type resError struct {
	errno int
	msg   string
}

func (e *resError) Error() string { return e.msg }

func badValue(attr string) *resError {
	return &resError{pbseBadAtVal, "Illegal attribute or resource value " + attr}
}

// parseSelect parses "2:ncpus=4:mpiprocs=4+1:ncpus=1" and appends the
// default chunk resource ncpus=1 where a chunk does not name ncpus.
func parseSelect(s string) ([]Chunk, *resError) {
	if s == "" {
		return nil, badValue("Resource_List.select")
	}
	var chunks []Chunk
	for _, spec := range strings.Split(s, "+") {
		parts := strings.Split(spec, ":")
		c := Chunk{Count: 1}
		start := 0
		if n, err := strconv.Atoi(parts[0]); err == nil {
			if n < 1 {
				return nil, badValue("Resource_List.select")
			}
			c.Count = n
			start = 1
		}
		for _, p := range parts[start:] {
			k, v, ok := strings.Cut(p, "=")
			if !ok || k == "" || v == "" {
				return nil, badValue("Resource_List.select")
			}
			if !chunkResources[k] {
				return nil, &resError{pbseUnkResc, "Unknown resource: " + k}
			}
			switch k {
			case "ncpus", "mpiprocs", "ompthreads", "ngpus", "naccelerators":
				if n, err := strconv.Atoi(v); err != nil || n < 0 {
					return nil, badValue("Resource_List.select")
				}
			case "mem", "vmem", "accelerator_memory":
				if _, ok := parseSize(v); !ok {
					return nil, badValue("Resource_List.select")
				}
			}
			c.Res = append(c.Res, KeyVal{k, v})
		}
		if _, ok := c.get("ncpus"); !ok {
			c.Res = append(c.Res, KeyVal{"ncpus", "1"})
		}
		chunks = append(chunks, c)
	}
	return chunks, nil
}

func selectString(chunks []Chunk) string {
	s := make([]string, len(chunks))
	for i, c := range chunks {
		s[i] = c.String()
	}
	return strings.Join(s, "+")
}

// validPlace checks a place spec: free|pack|scatter|vscatter[:excl|shared|exclhost].
func validPlace(p string) bool {
	for _, part := range strings.Split(p, ":") {
		switch part {
		case "free", "pack", "scatter", "vscatter", "excl", "shared", "exclhost":
		default:
			if !strings.HasPrefix(part, "group=") {
				return false
			}
		}
	}
	return true
}

// ResourceRequest is the result of resolving a job's -l resources.
type ResourceRequest struct {
	List     map[string]string // Resource_List, by resource name
	Chunks   []Chunk
	Walltime int // seconds, -1 when unlimited
}

func (r ResourceRequest) names() []string {
	n := make([]string, 0, len(r.List))
	for k := range r.List {
		n = append(n, k)
	}
	sort.Strings(n)
	return n
}

func (r ResourceRequest) totalInt(name string) int {
	t := 0
	for _, c := range r.Chunks {
		t += c.Count * c.intRes(name, 0)
	}
	return t
}

func (r ResourceRequest) totalSize(name string) int64 {
	var t int64
	for _, c := range r.Chunks {
		t += int64(c.Count) * c.sizeRes(name)
	}
	return t
}

func (r ResourceRequest) exclusive() bool {
	for _, p := range strings.Split(r.List["place"], ":") {
		if p == "excl" || p == "exclhost" {
			return true
		}
	}
	return false
}

// resolveResources turns the merged -l list (name → value, in the order
// given) into Resource_List the way the OpenPBS server does: a select spec
// with default_chunk.ncpus=1, summed ncpus/mpiprocs/mem/ngpus, nodect and
// place=free unless given.
func resolveResources(req []KeyVal, defaults map[string]string) (ResourceRequest, *resError) {
	rr := ResourceRequest{List: map[string]string{}, Walltime: -1}
	given := map[string]string{}
	for _, kv := range req {
		if !knownResources[kv.K] {
			return rr, &resError{pbseUnkResc, "Unknown resource Resource_List." + kv.K}
		}
		given[kv.K] = kv.V
	}
	for k, v := range defaults {
		if _, ok := given[k]; !ok {
			given[k] = v
		}
	}
	for k, v := range given {
		switch k {
		case "walltime", "cput", "pcput", "min_walltime", "max_walltime":
			sec, ok := parseDuration(v)
			if !ok {
				return rr, badValue("Resource_List." + k)
			}
			rr.List[k] = formatDuration(sec)
			if k == "walltime" {
				rr.Walltime = sec
			}
		case "mem", "vmem", "pmem", "pvmem":
			if _, ok := parseSize(v); !ok {
				return rr, badValue("Resource_List." + k)
			}
			rr.List[k] = v
		case "ncpus", "ngpus", "mpiprocs", "ompthreads", "nice":
			if n, err := strconv.Atoi(v); err != nil || n < 0 {
				return rr, badValue("Resource_List." + k)
			}
			rr.List[k] = v
		case "place":
			if !validPlace(v) {
				return rr, badValue("Resource_List.place")
			}
			rr.List[k] = v
		case "select", "nodes":
		default:
			rr.List[k] = v
		}
	}
	var chunks []Chunk
	switch {
	case given["select"] != "":
		var err *resError
		chunks, err = parseSelect(given["select"])
		if err != nil {
			return rr, err
		}
	case given["nodes"] != "":
		// Old Torque-style nodes=N:ppn=P becomes select=N:ncpus=P:mpiprocs=P.
		parts := strings.Split(given["nodes"], ":")
		n, err := strconv.Atoi(parts[0])
		if err != nil || n < 1 {
			return rr, badValue("Resource_List.nodes")
		}
		ppn := 1
		for _, p := range parts[1:] {
			if v, ok := strings.CutPrefix(p, "ppn="); ok {
				if ppn, err = strconv.Atoi(v); err != nil || ppn < 1 {
					return rr, badValue("Resource_List.nodes")
				}
			}
		}
		chunks = []Chunk{{Count: n, Res: []KeyVal{{"ncpus", strconv.Itoa(ppn)}, {"mpiprocs", strconv.Itoa(ppn)}}}}
		rr.List["nodes"] = given["nodes"]
	default:
		c := Chunk{Count: 1}
		ncpus := "1"
		if v, ok := rr.List["ncpus"]; ok {
			ncpus = v
		}
		c.Res = append(c.Res, KeyVal{"ncpus", ncpus})
		for _, k := range []string{"mem", "ngpus", "mpiprocs", "ompthreads"} {
			if v, ok := rr.List[k]; ok {
				c.Res = append(c.Res, KeyVal{k, v})
			}
		}
		chunks = []Chunk{c}
	}
	rr.Chunks = chunks
	rr.List["select"] = selectString(chunks)
	rr.List["ncpus"] = strconv.Itoa(rr.totalInt("ncpus"))
	nodect := 0
	hasMPI, hasGPU, hasMem, hasOMP := false, false, false, false
	for _, c := range chunks {
		nodect += c.Count
		_, m := c.get("mpiprocs")
		_, g := c.get("ngpus")
		_, me := c.get("mem")
		_, o := c.get("ompthreads")
		hasMPI, hasGPU, hasMem, hasOMP = hasMPI || m, hasGPU || g, hasMem || me, hasOMP || o
	}
	rr.List["nodect"] = strconv.Itoa(nodect)
	if hasMPI {
		rr.List["mpiprocs"] = strconv.Itoa(rr.totalInt("mpiprocs"))
	}
	if hasGPU {
		rr.List["ngpus"] = strconv.Itoa(rr.totalInt("ngpus"))
	}
	if hasOMP {
		rr.List["ompthreads"] = strconv.Itoa(rr.totalInt("ompthreads"))
	}
	if hasMem {
		rr.List["mem"] = formatSize(rr.totalSize("mem"))
	}
	if _, ok := rr.List["place"]; !ok {
		rr.List["place"] = "free"
	}
	return rr, nil
}

// exceedsLimits reports whether the request is over a queue's resources_max.
func exceedsLimits(rr ResourceRequest, max map[string]string) bool {
	for k, lim := range max {
		v, ok := rr.List[k]
		if !ok {
			continue
		}
		switch k {
		case "walltime", "cput":
			a, _ := parseDuration(v)
			b, ok := parseDuration(lim)
			if ok && a > b {
				return true
			}
		case "mem", "vmem":
			a, _ := parseSize(v)
			b, ok := parseSize(lim)
			if ok && a > b {
				return true
			}
		default:
			a, err1 := strconv.Atoi(v)
			b, err2 := strconv.Atoi(lim)
			if err1 == nil && err2 == nil && a > b {
				return true
			}
		}
	}
	return false
}
