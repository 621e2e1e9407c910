package pbsemu

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

const qstatUsage = `usage: 
qstat [-f] [-J] [-p] [-t] [-x] [-E] [-F format | -w] [-D delim] [ job_identifier... | destination... ]
qstat [-a|-i|-r|-H|-T] [-J] [-t] [-u user] [-n] [-s] [-G|-M] [-1] [-w]
	[ job_identifier... | destination... ]
qstat -Q [-f] [-F format] [-D delim] [ destination... ]
qstat -q [-G|-M] [ destination... ]
qstat -B [-f] [-F format] [-D delim] [ server_name... ]
qstat --version
`

type flagSet struct {
	flags map[byte]string
	args  []string
}

// getopt parses POSIX-style options; spec is a getopt option string.
func getopt(args []string, spec string) (flagSet, byte, bool) {
	fs := flagSet{flags: map[byte]string{}}
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			fs.args = append(fs.args, args[i+1:]...)
			break
		}
		if len(a) < 2 || a[0] != '-' {
			fs.args = append(fs.args, a) // GNU getopt permutes operands
			continue
		}
		for k := 1; k < len(a); k++ {
			c := a[k]
			p := strings.IndexByte(spec, c)
			if p < 0 || c == ':' {
				return fs, c, false
			}
			if p+1 < len(spec) && spec[p+1] == ':' {
				if k+1 < len(a) {
					fs.flags[c] = a[k+1:]
				} else if i+1 < len(args) {
					i++
					fs.flags[c] = args[i]
				} else {
					return fs, c, false
				}
				break
			}
			fs.flags[c] = ""
		}
	}
	return fs, 0, true
}

func (f flagSet) has(c byte) bool { _, ok := f.flags[c]; return ok }

// isJobID reports whether an operand is a job id (starts with digits).
func isJobID(s string) bool {
	return len(s) > 0 && s[0] >= '0' && s[0] <= '9'
}

// Qstat is the qstat command.
func Qstat(in Instance, args []string, o IO) int {
	fs, _, ok := getopt(args, "aiprstwxu:fGHJMQqEBW:T1nF:D:")
	cfg, _ := in.LoadConfig()
	conflict := false
	if ok {
		alt := 0
		for _, c := range []byte("airH") {
			if fs.has(c) {
				alt++
			}
		}
		if alt > 1 || (fs.has('B') && (fs.has('Q') || alt > 0)) || (fs.has('F') && !fs.has('f')) {
			conflict = true
		}
		if f, has := fs.flags['F']; has && f != "json" && f != "dsv" && f != "default" {
			conflict = true
		}
	}
	if !ok || conflict {
		if conflict {
			fmt.Fprint(o.Stderr, "qstat: conflicting options.\n")
		}
		fmt.Fprint(o.Stderr, qstatUsage)
		return 2
	}
	jsonOut := fs.flags['F'] == "json"
	root := jobject("")
	if jsonOut {
		root.addInt("timestamp", time.Now().Unix())
		root.addString("pbs_version", cfg.PBSVersion)
		root.addString("pbs_server", cfg.ServerName)
	}
	finish := func(code int) int {
		if jsonOut {
			writeJSON(o.Stdout, root)
		}
		return code
	}
	connErr := func() int {
		fmt.Fprintf(o.Stderr, "System call failure.\nqstat: cannot connect to server %s (errno=%d)\n", cfg.ServerName, pbseSystem)
		return finish(255) // exit(-1)
	}
	if fs.has('B') {
		resp, err := in.call(Request{Op: "server"})
		if err != nil {
			return connErr()
		}
		e := StatEntry{ID: resp.Server, Attrs: resp.Attrs}
		switch {
		case jsonOut:
			srv := root.add(jobject("Server"))
			attrsJSON(srv.add(jobject(e.ID)), e.Attrs)
		case fs.has('f'):
			fullText(o.Stdout, "Server", []StatEntry{e})
		default:
			st, _ := attrValue(e.Attrs, "state_count", "")
			c := stateCounts(st)
			tot, _ := attrValue(e.Attrs, "total_jobs", "")
			fmt.Fprint(o.Stdout, "Server             Max   Tot   Que   Run   Hld   Wat   Trn   Ext Status\n"+
				"---------------- ----- ----- ----- ----- ----- ----- ----- ----- -----------\n")
			fmt.Fprintf(o.Stdout, "%-16s %5s %5s %5s %5s %5s %5s %5s %5s %-10s\n", truncDisplay(e.ID, 16), "0", tot,
				c["Queued"], c["Running"], c["Held"], c["Waiting"], c["Transit"], c["Exiting"], "Active")
		}
		return finish(0)
	}
	if fs.has('Q') || fs.has('q') {
		resp, err := in.call(Request{Op: "server"})
		if err != nil {
			return connErr()
		}
		if jsonOut {
			q := root.add(jobject("Queue"))
			for _, e := range resp.Queues {
				attrsJSON(q.add(jobject(e.ID)), e.Attrs)
			}
			return finish(0)
		}
		if fs.has('f') {
			fullText(o.Stdout, "Queue", resp.Queues)
			return 0
		}
		fmt.Fprint(o.Stdout, "Queue              Max   Tot Ena Str   Que   Run   Hld   Wat   Trn   Ext Type\n"+
			"---------------- ----- ----- --- --- ----- ----- ----- ----- ----- ----- ----\n")
		for _, e := range resp.Queues {
			st, _ := attrValue(e.Attrs, "state_count", "")
			c := stateCounts(st)
			tot, _ := attrValue(e.Attrs, "total_jobs", "")
			fmt.Fprintf(o.Stdout, "%-16s %5s %5s %3s %3s %5s %5s %5s %5s %5s %5s %-4s\n", truncDisplay(e.ID, 16),
				"0", tot, "yes", "yes", c["Queued"], c["Running"], c["Held"], c["Waiting"], c["Transit"], c["Exiting"], "Exe*")
		}
		return 0
	}

	history := fs.has('x') || fs.has('H')
	var ids, queues []string
	for _, a := range fs.args {
		if isJobID(a) {
			ids = append(ids, a)
		} else {
			q, _, _ := strings.Cut(a, "@")
			queues = append(queues, q)
		}
	}
	alt := fs.has('a') || fs.has('i') || fs.has('r') || fs.has('H') || fs.has('s') || fs.has('n') || fs.has('u')
	user := fs.flags['u']
	var out strings.Builder
	anyFailed := 0
	jobsNode := (*jnode)(nil)
	header := false
	show := func(e StatEntry) {
		if user != "" {
			owner, _ := attrValue(e.Attrs, "Job_Owner", "")
			if u, _, _ := strings.Cut(owner, "@"); u != user {
				return
			}
		}
		if len(queues) > 0 {
			q, _ := attrValue(e.Attrs, "queue", "")
			if !contains(queues, q) {
				return
			}
		}
		st, _ := attrValue(e.Attrs, "job_state", "")
		switch {
		case fs.has('H') && !strings.Contains("FMX", st):
			return
		case fs.has('i') && !strings.Contains("EHQTW", st):
			return
		case fs.has('r') && !strings.Contains("RS", st):
			return
		}
		switch {
		case jsonOut:
			if jobsNode == nil {
				jobsNode = root.add(jobject("Jobs"))
			}
			attrsJSON(jobsNode.add(jobject(e.ID)), e.Attrs)
		case fs.has('f'):
			var b strings.Builder
			fullText(&b, "Job Id", []StatEntry{e})
			out.WriteString(b.String())
		case alt:
			if header {
				out.WriteString(altHeader(cfg.ServerName))
				header = false
			}
			out.WriteString(altRow(e.Attrs, e.ID, fs.has('n'), fs.has('s')))
		default:
			if header {
				out.WriteString(defaultHeader)
				header = false
			}
			out.WriteString(defaultRow(e.Attrs, e.ID))
		}
	}
	if len(ids) == 0 {
		resp, err := in.call(Request{Op: "stat", History: history, Subjobs: fs.has('t'), Arrays: fs.has('J')})
		if err != nil {
			return connErr()
		}
		header = true
		for _, e := range resp.Entries {
			show(e)
		}
	} else {
		resp, err := in.call(Request{Op: "stat", IDs: ids, History: history, Subjobs: fs.has('t')})
		if err != nil {
			return connErr()
		}
		// Like qstat, which asks for each operand in turn and prints the
		// table header only with the first answer.
		for i, e := range resp.Entries {
			header = i == 0
			switch e.Errno {
			case 0:
				show(e)
			case pbseHistJobID:
				fmt.Fprintf(o.Stderr, "qstat: %s %s, use -x or -H to obtain historical job information\n", e.ID, pbseText(e.Errno))
				anyFailed = e.Errno
			default:
				fmt.Fprintf(o.Stderr, "qstat: %s %s\n", pbseText(e.Errno), e.ID)
				anyFailed = e.Errno
			}
		}
	}
	fmt.Fprint(o.Stdout, out.String())
	return finish(exitCode(anyFailed))
}

// stateCounts parses "Transit:0 Queued:1 ..." into a map.
func stateCounts(s string) map[string]string {
	m := map[string]string{}
	for _, f := range strings.Fields(s) {
		k, v, _ := strings.Cut(f, ":")
		m[k] = v
	}
	return m
}

// Qdel is the qdel command.
func Qdel(in Instance, args []string, o IO) int {
	fs, _, ok := getopt(args, "W:x")
	if w, has := fs.flags['W']; ok && has && w != "force" && !strings.HasPrefix(w, "suppress_email=") {
		if _, err := strconv.Atoi(w); err != nil {
			fmt.Fprintln(o.Stderr, "qdel: illegal -W value")
			ok = false
		}
	}
	if !ok || len(fs.args) == 0 {
		fmt.Fprint(o.Stderr, "usage:\n\tqdel [-W force|suppress_email=X] [-x] job_identifier...\n\tqdel --version\n")
		return 2
	}
	anyFailed := 0
	var ids []string
	for _, a := range fs.args {
		if !isJobID(a) {
			fmt.Fprintf(o.Stderr, "qdel: illegally formed job identifier: %s\n", a)
			anyFailed = 1
			continue
		}
		ids = append(ids, a)
	}
	if len(ids) == 0 {
		return anyFailed
	}
	cfg, _ := in.LoadConfig()
	ui, _ := currentUser()
	resp, err := in.call(Request{Op: "delete", IDs: ids, Force: fs.flags['W'] == "force", DelHist: fs.has('x'), User: ui.name})
	if err != nil {
		fmt.Fprintf(o.Stderr, "System call failure.\nCouldn't connect to cluster: %s\n", cfg.ServerName)
		return exitCode(pbseSystem)
	}
	for _, e := range resp.Entries {
		if e.Errno != 0 && e.Errno != pbseHistJobDel {
			fmt.Fprintf(o.Stderr, "qdel: %s %s\n", pbseText(e.Errno), e.ID)
			anyFailed = e.Errno
		}
	}
	return exitCode(anyFailed)
}

// Qrls is the qrls command (releases user holds).
func Qrls(in Instance, args []string, o IO) int {
	fs, _, ok := getopt(args, "h:")
	if !ok || len(fs.args) == 0 {
		fmt.Fprint(o.Stderr, "usage: qrls [-h hold_list] job_identifier...\n       qrls --version\n")
		return 2
	}
	cfg, _ := in.LoadConfig()
	resp, err := in.call(Request{Op: "release", IDs: fs.args})
	if err != nil {
		fmt.Fprintf(o.Stderr, "System call failure.\nqrls: cannot connect to server %s (errno=%d)\n", cfg.ServerName, pbseSystem)
		return exitCode(pbseSystem)
	}
	anyFailed := 0
	for _, e := range resp.Entries {
		if e.Errno != 0 {
			fmt.Fprintf(o.Stderr, "qrls: %s %s\n", pbseText(e.Errno), e.ID)
			anyFailed = e.Errno
		}
	}
	return exitCode(anyFailed)
}

// Qselect is a subset of qselect: -s states, -x, -u user, -N name, -q queue.
func Qselect(in Instance, args []string, o IO) int {
	fs, _, ok := getopt(args, "s:xu:N:q:HJT")
	if !ok {
		fmt.Fprint(o.Stderr, "usage: qselect [-s states] [-x] [-u user] [-N name] [-q queue]\n")
		return 2
	}
	cfg, _ := in.LoadConfig()
	resp, err := in.call(Request{Op: "stat", History: fs.has('x')})
	if err != nil {
		fmt.Fprintf(o.Stderr, "System call failure.\nqselect: cannot connect to server %s (errno=%d)\n", cfg.ServerName, pbseSystem)
		return exitCode(pbseSystem)
	}
	for _, e := range resp.Entries {
		st, _ := attrValue(e.Attrs, "job_state", "")
		if s, has := fs.flags['s']; has && !strings.Contains(s, st) {
			continue
		}
		if u, has := fs.flags['u']; has {
			owner, _ := attrValue(e.Attrs, "Job_Owner", "")
			if name, _, _ := strings.Cut(owner, "@"); name != u {
				continue
			}
		}
		if n, has := fs.flags['N']; has {
			if v, _ := attrValue(e.Attrs, "Job_Name", ""); v != n {
				continue
			}
		}
		if q, has := fs.flags['q']; has {
			if v, _ := attrValue(e.Attrs, "queue", ""); v != q {
				continue
			}
		}
		fmt.Fprintln(o.Stdout, e.ID)
	}
	return 0
}

// Pbsnodes is "pbsnodes -a [-F json]".
func Pbsnodes(in Instance, args []string, o IO) int {
	fs, _, ok := getopt(args, "avF:")
	if !ok {
		fmt.Fprint(o.Stderr, "usage: pbsnodes -a [-F json]\n")
		return 2
	}
	cfg, _ := in.LoadConfig()
	resp, err := in.call(Request{Op: "nodes"})
	if err != nil {
		fmt.Fprintf(o.Stderr, "System call failure.\npbsnodes: cannot connect to server %s, error=%d\n", cfg.ServerName, pbseSystem)
		return exitCode(pbseSystem)
	}
	if fs.flags['F'] == "json" {
		root := jobject("")
		root.addInt("timestamp", time.Now().Unix())
		root.addString("pbs_version", cfg.PBSVersion)
		root.addString("pbs_server", cfg.ServerName)
		nodes := root.add(jobject("nodes"))
		attrsJSON(nodes.add(jobject(cfg.NodeName)), resp.Attrs)
		writeJSON(o.Stdout, root)
		return 0
	}
	var b strings.Builder
	b.WriteString(cfg.NodeName + "\n")
	for _, a := range resp.Attrs {
		n := a.Name
		if a.Resource != "" {
			n += "." + a.Resource
		}
		b.WriteString("     " + n + " = " + a.Value + "\n")
	}
	b.WriteString("\n")
	fmt.Fprint(o.Stdout, b.String())
	return 0
}
