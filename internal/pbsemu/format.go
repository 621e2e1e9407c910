package pbsemu

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"unicode"
)

// jnode is a node of qstat's JSON output, kept in insertion order.
type jnode struct {
	key      string
	raw      string // a value already formatted (number or quoted string)
	children []*jnode
	object   bool
}

func jobject(key string) *jnode { return &jnode{key: key, object: true} }

func (n *jnode) add(c *jnode) *jnode { n.children = append(n.children, c); return c }

// addInt adds an integer node (JSON_INT).
func (n *jnode) addInt(key string, v int64) { n.add(&jnode{key: key, raw: strconv.FormatInt(v, 10)}) }

// addString adds a string node with full escaping (JSON_STRING, FULLESCAPE).
func (n *jnode) addString(key, v string) { n.add(&jnode{key: key, raw: `"` + jsonFullEscape(v) + `"`}) }

// addAuto adds a value whose type qstat guesses (JSON_NULL): numbers are
// printed bare, everything else as an escaped string.
func (n *jnode) addAuto(key, v string) {
	if isJSONNumber(v) {
		n.add(&jnode{key: key, raw: strings.TrimSpace(v)})
		return
	}
	n.add(&jnode{key: key, raw: `"` + jsonEscape(v) + `"`})
}

// isJSONNumber follows add_json_node in OpenPBS: a value that strtod reads
// completely (up to trailing white space) is a number unless it has a
// leading zero and is 1 or more ("007" and "00:00:10" stay strings).
func isJSONNumber(v string) bool {
	t := strings.TrimLeftFunc(v, unicode.IsSpace)
	t = strings.TrimRightFunc(t, unicode.IsSpace)
	if t == "" || strings.ContainsAny(t, "_xXpP") {
		return false
	}
	low := strings.ToLower(strings.TrimLeft(t, "+-"))
	if strings.HasPrefix(low, "inf") || strings.HasPrefix(low, "nan") {
		return false
	}
	f, err := strconv.ParseFloat(t, 64)
	if err != nil {
		return false
	}
	return v[0] != '0' || f < 1
}

// jsonEscape is strdup_escape(JSON_ESCAPE): control characters escaped, an
// unescaped quote escaped, a backslash before ' or , dropped, any other
// backslash copied with the character after it.
func jsonEscape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch c {
		case '\b':
			b.WriteString(`\b`)
		case '\f':
			b.WriteString(`\f`)
		case '\n':
			b.WriteString(`\n`)
		case '\r':
			b.WriteString(`\r`)
		case '\t':
			b.WriteString(`\t`)
		case '"':
			if i > 0 && s[i-1] != '\\' {
				b.WriteByte('\\')
			}
			b.WriteByte('"')
		case '\\':
			if i+1 < len(s) && (s[i+1] == '\'' || s[i+1] == ',') {
				i++
				b.WriteByte(s[i])
			} else {
				b.WriteByte('\\')
				if i+1 < len(s) {
					i++
					b.WriteByte(s[i])
				}
			}
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

func jsonFullEscape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '\b':
			b.WriteString(`\b`)
		case '\f':
			b.WriteString(`\f`)
		case '\n':
			b.WriteString(`\n`)
		case '\r':
			b.WriteString(`\r`)
		case '\t':
			b.WriteString(`\t`)
		case '"':
			b.WriteString(`\"`)
		case '\\':
			b.WriteString(`\\`)
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// writeJSON prints the tree the way OpenPBS 23.06 does: one member per
// line, tab indentation, a tab after the colon.
func writeJSON(w io.Writer, root *jnode) {
	var b strings.Builder
	b.WriteString("{")
	writeMembers(&b, root, 1)
	b.WriteString("\n}\n")
	_, _ = io.WriteString(w, b.String())
}

func writeMembers(b *strings.Builder, n *jnode, depth int) {
	for i, c := range n.children {
		if i > 0 {
			b.WriteString(",")
		}
		b.WriteString("\n")
		b.WriteString(strings.Repeat("\t", depth))
		b.WriteString(`"` + c.key + `":` + "\t")
		if c.object {
			b.WriteString("{")
			writeMembers(b, c, depth+1)
			b.WriteString("\n" + strings.Repeat("\t", depth) + "}")
			continue
		}
		b.WriteString(c.raw)
	}
}

// splitVariableList splits Variable_List at unescaped commas and each
// entry at its first '=' (prt_attr's JSON branch).
func splitVariableList(v string) []KeyVal {
	var out []KeyVal
	var cur strings.Builder
	flush := func() {
		k, val, _ := strings.Cut(cur.String(), "=")
		out = append(out, KeyVal{k, val})
		cur.Reset()
	}
	for i := 0; i < len(v); i++ {
		if v[i] == '\\' && i+1 < len(v) && v[i+1] == ',' {
			cur.WriteByte(',')
			i++
			continue
		}
		if v[i] == ',' {
			flush()
			continue
		}
		cur.WriteByte(v[i])
	}
	if cur.Len() > 0 || len(v) > 0 {
		flush()
	}
	return out
}

// attrsJSON adds attributes to obj: resources become nested objects,
// Variable_List an object of variables, times stay epoch values for the
// caller to convert.
func attrsJSON(obj *jnode, attrs []Attr) {
	var resc *jnode
	for _, a := range attrs {
		v := a.Value
		if timeAttrs[a.Name] {
			if e, err := strconv.ParseInt(v, 10, 64); err == nil {
				v = ctime(e)
			}
		}
		if a.Resource != "" {
			if resc == nil || resc.key != a.Name {
				resc = obj.add(jobject(a.Name))
			}
			resc.addAuto(a.Resource, v)
			continue
		}
		resc = nil
		if a.Name == "Variable_List" {
			vl := obj.add(jobject(a.Name))
			for _, kv := range splitVariableList(v) {
				vl.addAuto(kv.K, kv.V)
			}
			continue
		}
		obj.addAuto(a.Name, v)
	}
}

// prtAttr prints one attribute of qstat -f, wrapping long values at commas
// the way prt_attr does (78 columns, continuation lines start with a tab).
func prtAttr(w *strings.Builder, name, resource, value string) {
	const limit = 78
	start := len(name) + 7
	w.WriteString("    " + name)
	if resource != "" {
		start += len(resource) + 1
		w.WriteString("." + resource)
	}
	w.WriteString(" = ")
	var toks []string
	for _, t := range strings.Split(value, ",") {
		if t != "" {
			toks = append(toks, t) // strtok skips empty tokens
		}
	}
	first := true
	for i, tok := range toks {
		if len(tok)+start < limit {
			w.WriteString(tok)
			start += len(tok)
		} else {
			if !first {
				w.WriteString("\n\t")
				start = 9
			}
			for k := 0; k < len(tok); k++ {
				w.WriteByte(tok[k])
				start++
				if start > limit {
					start = 8
					w.WriteString("\n\t")
				}
			}
		}
		if i+1 < len(toks) {
			first = false
			w.WriteByte(',')
		}
	}
}

// fullText prints "qstat -f" blocks for jobs ("Job Id") or servers ("Server").
func fullText(w io.Writer, label string, entries []StatEntry) {
	var b strings.Builder
	for _, e := range entries {
		b.WriteString(label + ": " + e.ID + "\n")
		for i, a := range e.Attrs {
			v := a.Value
			if timeAttrs[a.Name] {
				if ep, err := strconv.ParseInt(v, 10, 64); err == nil {
					v = ctime(ep)
				}
			}
			prtAttr(&b, a.Name, a.Resource, v)
			if i+1 < len(e.Attrs) {
				b.WriteString("\n")
			}
		}
		b.WriteString("\n\n")
	}
	_, _ = io.WriteString(w, b.String())
}

func attrValue(attrs []Attr, name, resource string) (string, bool) {
	for _, a := range attrs {
		if a.Name == name && a.Resource == resource {
			return a.Value, true
		}
	}
	return "", false
}

// truncDisplay shortens s to n characters, marking the cut with '*'.
func truncDisplay(s string, n int) string {
	if len(s) > n {
		return s[:n-1] + "*"
	}
	return s
}

// shortJobID keeps the sequence number and the first label of the server.
func shortJobID(id string) string {
	seq, srv, ok := strings.Cut(id, ".")
	if !ok {
		return id
	}
	first, _, _ := strings.Cut(srv, ".")
	return seq + "." + first
}

const defaultHeader = "Job id            Name             User              Time Use S Queue\n" +
	"----------------  ---------------- ----------------  -------- - -----\n"

// defaultRow is one line of the default qstat table.
func defaultRow(a []Attr, id string) string {
	name, _ := attrValue(a, "Job_Name", "")
	if len(name) >= 16 {
		name = name[:15] + "*"
	}
	owner, _ := attrValue(a, "Job_Owner", "")
	owner, _, _ = strings.Cut(owner, "@")
	timeu, ok := attrValue(a, "resources_used", "cput")
	if !ok {
		timeu = "0"
	}
	state, _ := attrValue(a, "job_state", "")
	queue, _ := attrValue(a, "queue", "")
	return fmt.Sprintf("%-17s %-16s %-16s  %8s %1s %-16s\n",
		truncDisplay(shortJobID(id), 17), name, truncDisplay(owner, 16),
		truncDisplay(timeu, 8), state, truncDisplay(queue, 16))
}

func altHeader(server string) string {
	return "\n" + server + ": \n" +
		"                                                            Req'd  Req'd   Elap\n" +
		"Job ID          Username Queue    Jobname    SessID NDS TSK Memory Time  S Time\n" +
		"--------------- -------- -------- ---------- ------ --- --- ------ ----- - -----\n"
}

// hhmm prints a HH:MM:SS duration as HH:MM.
func hhmm(v string) string {
	if sec, ok := parseDuration(v); ok {
		return fmt.Sprintf("%02d:%02d", sec/3600, sec/60%60)
	}
	return "-- "
}

// altRow is one line of "qstat -a" (and -s, -n, -H, -i, -r).
func altRow(a []Attr, id string, withNodes, withComment bool) string {
	user, _ := attrValue(a, "Job_Owner", "")
	user, _, _ = strings.Cut(user, "@")
	queue, _ := attrValue(a, "queue", "")
	name, _ := attrValue(a, "Job_Name", "")
	sess, ok := attrValue(a, "session_id", "")
	if !ok {
		sess = "-- "
	}
	nds, ok := attrValue(a, "Resource_List", "nodect")
	if !ok {
		nds = "-- "
	}
	tsk, ok := attrValue(a, "Resource_List", "ncpus")
	if !ok {
		tsk = "-- "
	}
	mem, ok := attrValue(a, "Resource_List", "mem")
	if !ok {
		mem = "-- "
	}
	req := "-- "
	if wt, ok := attrValue(a, "Resource_List", "walltime"); ok {
		req = hhmm(wt)
	}
	state, _ := attrValue(a, "job_state", "")
	elap := "-- "
	if wt, ok := attrValue(a, "resources_used", "walltime"); ok {
		elap = hhmm(wt)
	}
	line := fmt.Sprintf("%-15s %-8s %-8s %-10s %6s %3s %3s %6s %5s %1s %5s\n",
		truncDisplay(shortJobID(id), 15), truncDisplay(user, 8), truncDisplay(queue, 8),
		truncDisplay(name, 10), truncDisplay(sess, 6), nds, tsk, truncDisplay(mem, 6), req, state, elap)
	if withNodes {
		if eh, ok := attrValue(a, "exec_host", ""); ok {
			line += "   " + eh + "\n"
		} else {
			line += "   --\n"
		}
	}
	if withComment {
		if c, ok := attrValue(a, "comment", ""); ok {
			line += "   " + c + "\n"
		}
	}
	return line
}
