package pbsemu

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// IO carries a command's standard streams and environment, so commands can
// run in tests without a process.
type IO struct {
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
	Env    []string // KEY=value, like os.Environ()
	Cwd    string
}

func (o IO) getenv(k string) string {
	for i := len(o.Env) - 1; i >= 0; i-- {
		if v, ok := strings.CutPrefix(o.Env[i], k+"="); ok {
			return v
		}
	}
	return ""
}

func (o IO) lookupEnv(k string) (string, bool) {
	for i := len(o.Env) - 1; i >= 0; i-- {
		if v, ok := strings.CutPrefix(o.Env[i], k+"="); ok {
			return v, true
		}
	}
	return "", false
}

const qsubUsage = `usage: qsub [-a date_time] [-A account_string] [-c interval]
	[-C directive_prefix] [-e path] [-f ] [-h ] [-I [-X]] [-j oe|eo] [-J X-Y[:Z]]
	[-k keep] [-l resource_list] [-m mail_options] [-M user_list]
	[-N jobname] [-o path] [-p priority] [-P project] [-q queue] [-r y|n]
	[-R o|e|oe] [-S path] [-u user_list] [-W otherattributes=value...]
	[-v variable_list] [-V ] [-z] [script | -- command [arg1 ...]]
       qsub --version
`

// qsubOpts holds qsub options; set records which were given.
type qsubOpts struct {
	set        map[byte]bool
	res        []KeyVal
	w          []KeyVal
	account    string
	checkpoint string
	prefix     string
	errPath    string
	hold       bool
	join       string
	keep       string
	mailPoints string
	mailUsers  string
	name       string
	outPath    string
	priority   int
	project    string
	queue      string
	rerun      string
	shell      string
	vars       []KeyVal
	exportAll  bool
	noPrint    bool
	execTime   int64
	array      string
	interact   bool
}

const qsubOptString = "a:A:c:C:e:fhIj:J:k:l:m:M:N:o:p:P:q:r:R:S:u:v:VW:Xz"

// optError is an option rejected by qsub: the message ("illegal -N value")
// is printed with the usage text and qsub exits 2.
type optError string

func (e optError) Error() string { return string(e) }

// parseQsubArgs parses options getopt-style (options may be grouped, and
// option parsing stops at the first operand or at "--").
func parseQsubArgs(args []string, o *qsubOpts) (operands []string, dashdash bool, err error) {
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			return args[i+1:], true, nil
		}
		if len(a) < 2 || a[0] != '-' {
			return args[i:], false, nil
		}
		for k := 1; k < len(a); k++ {
			c := a[k]
			p := strings.IndexByte(qsubOptString, c)
			if p < 0 || c == ':' {
				return nil, false, optError(fmt.Sprintf("invalid option -- '%c'", c))
			}
			var val string
			if p+1 < len(qsubOptString) && qsubOptString[p+1] == ':' {
				if k+1 < len(a) {
					val = a[k+1:]
				} else if i+1 < len(args) {
					i++
					val = args[i]
				} else {
					return nil, false, optError(fmt.Sprintf("option requires an argument -- '%c'", c))
				}
				if err := o.apply(c, val); err != nil {
					return nil, false, err
				}
				break
			}
			if err := o.apply(c, ""); err != nil {
				return nil, false, err
			}
		}
	}
	return nil, false, nil
}

// validJobName is OpenPBS's check_job_name: up to 236 characters, each a
// letter, digit, '-', '_', '+' or '.', the first a letter or digit.
func validJobName(v string) bool {
	if v == "" || len(v) > 236 {
		return false
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if !alnum && (i == 0 || !strings.ContainsRune("-_+.", rune(c))) {
			return false
		}
	}
	return true
}

func illegal(c byte) error { return optError(fmt.Sprintf("illegal -%c value", c)) }

func (o *qsubOpts) apply(c byte, v string) error {
	if o.set == nil {
		o.set = map[byte]bool{}
	}
	o.set[c] = true
	switch c {
	case 'a':
		t, ok := parseDateTime(v, time.Now())
		if !ok {
			return illegal(c)
		}
		o.execTime = t
	case 'A':
		o.account = v
	case 'c':
		o.checkpoint = v
	case 'C':
		o.prefix = v
	case 'e':
		o.errPath = v
	case 'f', 'X', 'u', 'R':
	case 'h':
		o.hold = true
	case 'I':
		o.interact = true
	case 'j':
		if v != "oe" && v != "eo" && v != "n" {
			return illegal(c)
		}
		o.join = v
	case 'J':
		o.array = v
	case 'k':
		for _, ch := range v {
			if !strings.ContainsRune("oedn", ch) {
				return illegal(c)
			}
		}
		o.keep = v
	case 'l':
		for _, part := range splitResourceList(v) {
			k, val, ok := strings.Cut(part, "=")
			if !ok || k == "" {
				return illegal(c)
			}
			o.res = setKV(o.res, k, val)
		}
	case 'm':
		for _, ch := range v {
			if !strings.ContainsRune("abenj", ch) {
				return illegal(c)
			}
		}
		o.mailPoints = v
	case 'M':
		o.mailUsers = v
	case 'N':
		if !validJobName(v) {
			return illegal(c)
		}
		o.name = v
	case 'o':
		o.outPath = v
	case 'p':
		n, err := strconv.Atoi(v)
		if err != nil || n < -1024 || n > 1023 {
			return illegal(c)
		}
		o.priority = n
	case 'P':
		o.project = v
	case 'q':
		o.queue = v
	case 'r':
		if v != "y" && v != "n" {
			return illegal(c)
		}
		o.rerun = v
	case 'S':
		o.shell = v
	case 'v':
		o.vars = append(o.vars, parseVarList(v)...)
	case 'V':
		o.exportAll = true
	case 'W':
		for _, part := range splitResourceList(v) {
			k, val, ok := strings.Cut(part, "=")
			if !ok {
				return illegal(c)
			}
			switch k {
			case "depend", "umask", "block", "sandbox", "group_list", "stagein", "stageout",
				"run_count", "release_nodes_on_stageout", "tolerate_node_failures", "max_run_subjobs":
			default:
				return illegal(c)
			}
			if k == "umask" {
				if _, err := strconv.ParseUint(val, 8, 32); err != nil {
					return illegal(c)
				}
			}
			o.w = setKV(o.w, k, val)
		}
	case 'z':
		o.noPrint = true
	}
	return nil
}

func setKV(list []KeyVal, k, v string) []KeyVal {
	for i := range list {
		if list[i].K == k {
			list[i].V = v
			return list
		}
	}
	return append(list, KeyVal{k, v})
}

func getKV(list []KeyVal, k string) (string, bool) {
	for _, kv := range list {
		if kv.K == k {
			return kv.V, true
		}
	}
	return "", false
}

// splitResourceList splits "a=1,b=2" at commas outside quotes.
func splitResourceList(s string) []string {
	var out []string
	var cur strings.Builder
	var quote rune
	for _, r := range s {
		switch {
		case quote != 0:
			if r == quote {
				quote = 0
			}
			cur.WriteRune(r)
		case r == '"' || r == '\'':
			quote = r
			cur.WriteRune(r)
		case r == ',':
			out = append(out, cur.String())
			cur.Reset()
		default:
			cur.WriteRune(r)
		}
	}
	if cur.Len() > 0 {
		out = append(out, cur.String())
	}
	return out
}

// parseVarList parses -v "A=1,B,C='x,y'"; a name without a value takes
// the submitter's value (filled in later).
func parseVarList(s string) []KeyVal {
	var out []KeyVal
	for _, part := range splitResourceList(s) {
		k, v, ok := strings.Cut(part, "=")
		if len(v) >= 2 && (v[0] == '"' || v[0] == '\'') && v[len(v)-1] == v[0] {
			v = v[1 : len(v)-1]
		}
		if !ok {
			v = "\x00"
		}
		out = append(out, KeyVal{strings.TrimSpace(k), v})
	}
	return out
}

// parseDateTime parses -a [[[[CC]YY]MM]DD]hhmm[.SS].
func parseDateTime(s string, now time.Time) (int64, bool) {
	sec := 0
	if i := strings.IndexByte(s, '.'); i >= 0 {
		n, err := strconv.Atoi(s[i+1:])
		if err != nil || len(s[i+1:]) != 2 {
			return 0, false
		}
		sec = n
		s = s[:i]
	}
	if _, err := strconv.Atoi(s); err != nil || len(s)%2 != 0 || len(s) < 4 || len(s) > 12 {
		return 0, false
	}
	num := func(a string) int { n, _ := strconv.Atoi(a); return n }
	y, mo, d := now.Date()
	hh, mm := num(s[len(s)-4:len(s)-2]), num(s[len(s)-2:])
	rest := s[:len(s)-4]
	explicitDay := false
	if len(rest) >= 2 {
		d, explicitDay = num(rest[len(rest)-2:]), true
		rest = rest[:len(rest)-2]
	}
	if len(rest) >= 2 {
		mo = time.Month(num(rest[len(rest)-2:]))
		rest = rest[:len(rest)-2]
	}
	switch len(rest) {
	case 2:
		y = 2000 + num(rest)
	case 4:
		y = num(rest)
	}
	t := time.Date(y, mo, d, hh, mm, sec, 0, time.Local)
	if !explicitDay && t.Before(now) {
		t = t.Add(24 * time.Hour)
	}
	return t.Unix(), true
}

// shellWords splits a directive line like a shell would (quotes, no expansion).
func shellWords(s string) []string {
	var out []string
	var cur strings.Builder
	in := false
	var quote rune
	for _, r := range s {
		switch {
		case quote != 0:
			if r == quote {
				quote = 0
			} else {
				cur.WriteRune(r)
			}
		case r == '"' || r == '\'':
			quote, in = r, true
		case r == ' ' || r == '\t':
			if in {
				out = append(out, cur.String())
				cur.Reset()
				in = false
			}
		case r == '#' && !in:
			return out // a comment after the directive
		default:
			cur.WriteRune(r)
			in = true
		}
	}
	if in {
		out = append(out, cur.String())
	}
	return out
}

// scriptDirectives collects the #PBS option words of a script; they stop at
// the first line that is neither blank nor a comment.
func scriptDirectives(script, prefix string) []string {
	var words []string
	sc := bufio.NewScanner(strings.NewReader(script))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := strings.TrimLeft(sc.Text(), " \t")
		if line == "" {
			continue
		}
		if rest, ok := strings.CutPrefix(line, prefix); ok {
			words = append(words, shellWords(rest)...)
			continue
		}
		if strings.HasPrefix(line, "#") {
			continue
		}
		break
	}
	return words
}

// merge overlays command-line options (hi) on directive options (o): the
// command line wins per option, and per resource for -l and -W.
func (o *qsubOpts) merge(hi *qsubOpts) {
	for _, kv := range hi.res {
		o.res = setKV(o.res, kv.K, kv.V)
	}
	for _, kv := range hi.w {
		o.w = setKV(o.w, kv.K, kv.V)
	}
	if o.set == nil {
		o.set = map[byte]bool{}
	}
	for c := range hi.set {
		o.set[c] = true
		switch c {
		case 'a':
			o.execTime = hi.execTime
		case 'A':
			o.account = hi.account
		case 'c':
			o.checkpoint = hi.checkpoint
		case 'e':
			o.errPath = hi.errPath
		case 'h':
			o.hold = true
		case 'I':
			o.interact = true
		case 'j':
			o.join = hi.join
		case 'J':
			o.array = hi.array
		case 'k':
			o.keep = hi.keep
		case 'm':
			o.mailPoints = hi.mailPoints
		case 'M':
			o.mailUsers = hi.mailUsers
		case 'N':
			o.name = hi.name
		case 'o':
			o.outPath = hi.outPath
		case 'p':
			o.priority = hi.priority
		case 'P':
			o.project = hi.project
		case 'q':
			o.queue = hi.queue
		case 'r':
			o.rerun = hi.rerun
		case 'S':
			o.shell = hi.shell
		case 'v':
			o.vars = hi.vars
		case 'V':
			o.exportAll = true
		case 'z':
			o.noPrint = true
		}
	}
}

type userInfo struct {
	name     string
	uid, gid int
	home     string
	shell    string
}

func currentUser() (userInfo, error) {
	u, err := user.Current()
	if err != nil {
		return userInfo{}, err
	}
	ui := userInfo{name: u.Username, home: u.HomeDir}
	ui.uid, _ = strconv.Atoi(u.Uid)
	ui.gid, _ = strconv.Atoi(u.Gid)
	ui.shell = passwdShell(u.Uid)
	return ui, nil
}

func passwdShell(uid string) string {
	b, err := os.ReadFile("/etc/passwd")
	if err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			f := strings.Split(line, ":")
			if len(f) >= 7 && f[2] == uid && f[6] != "" {
				return f[6]
			}
		}
	}
	return "/bin/sh"
}

// printSubmitError prints the message of a failed qsub.
func usageError(o IO, err error) int {
	var oe optError
	if errors.As(err, &oe) {
		fmt.Fprintf(o.Stderr, "qsub: %s\n", oe)
	}
	fmt.Fprint(o.Stderr, qsubUsage)
	return 2
}

// Qsub is the qsub command.
func Qsub(in Instance, args []string, o IO) int {
	var cl qsubOpts
	operands, dashdash, err := parseQsubArgs(args, &cl)
	if err != nil {
		return usageError(o, err)
	}
	if cl.interact {
		fmt.Fprintln(o.Stderr, "qsub: interactive jobs (-I) are not supported by pbsemu")
		return 2
	}
	req := &SubmitRequest{SubmitArgs: strings.Join(args, " "), Cwd: o.Cwd}
	var script string
	name := ""
	switch {
	case dashdash:
		if len(operands) == 0 {
			return usageError(o, nil)
		}
		req.Executable, req.Args = operands[0], operands[1:]
		name = "STDIN"
	case len(operands) > 1:
		return usageError(o, nil)
	case len(operands) == 0 || operands[0] == "-":
		b, err := io.ReadAll(o.Stdin)
		if err != nil {
			fmt.Fprintf(o.Stderr, "qsub: cannot read script from stdin: %v\n", err)
			return 1
		}
		script, name = string(b), "STDIN"
	default:
		path := operands[0]
		if !filepath.IsAbs(path) {
			path = filepath.Join(o.Cwd, path)
		}
		st, err := os.Stat(path)
		if err != nil {
			fmt.Fprintf(o.Stderr, "qsub: script file:: %s\n", errnoText(err))
			return 1
		}
		if !st.Mode().IsRegular() {
			fmt.Fprintln(o.Stderr, "qsub: script not a file")
			return 1
		}
		b, err := os.ReadFile(path)
		if err != nil {
			fmt.Fprintf(o.Stderr, "qsub: opening script file:: %s\n", errnoText(err))
			return 8
		}
		script = string(b)
		name = filepath.Base(operands[0])
		if len(name) > 236 {
			name = name[:236]
		}
	}
	prefix := "#PBS"
	if cl.set['C'] {
		prefix = cl.prefix
	}
	var opts qsubOpts
	if script != "" && prefix != "" {
		words := scriptDirectives(script, prefix)
		if ops, _, err := parseQsubArgs(words, &opts); err != nil || len(ops) > 0 {
			if err == nil {
				err = optError("directive error: " + strings.Join(ops, " "))
			}
			return usageError(o, err)
		}
	}
	opts.merge(&cl)
	if rc, done := arrayOptions(&opts, req, o); done {
		return rc
	}
	if opts.name != "" {
		name = opts.name
	}
	ui, err := currentUser()
	if err != nil {
		fmt.Fprintf(o.Stderr, "qsub: cannot determine user: %v\n", err)
		return 3
	}
	req.User, req.UID, req.GID, req.Home, req.Shell = ui.name, ui.uid, ui.gid, ui.home, ui.shell
	req.Name, req.Script = name, script
	req.Queue, req.Res = opts.queue, opts.res
	req.Account, req.Project = opts.account, opts.project
	req.OutputPath, req.ErrorPath = absPath(opts.outPath, o.Cwd), absPath(opts.errPath, o.Cwd)
	req.Join, req.Keep = opts.join, opts.keep
	req.MailPoints, req.MailUsers = opts.mailPoints, opts.mailUsers
	req.Hold, req.Priority, req.Checkpoint = opts.hold, opts.priority, opts.checkpoint
	req.ShellPath, req.ExecTime = opts.shell, opts.execTime
	if opts.rerun != "" {
		b := opts.rerun == "y"
		req.Rerunable = &b
	}
	req.Depend, _ = getKV(opts.w, "depend")
	req.Umask, _ = getKV(opts.w, "umask")
	req.VarList = jobEnvBasic(o, ui)
	if opts.exportAll {
		for _, kv := range o.Env {
			k, v, _ := strings.Cut(kv, "=")
			if k == "" || strings.HasPrefix(k, "PBS_O_") {
				continue
			}
			req.VarList = setKV(req.VarList, k, v)
		}
	}
	for _, kv := range opts.vars {
		if kv.V == "\x00" {
			kv.V = o.getenv(kv.K)
		}
		req.VarList = setKV(req.VarList, kv.K, kv.V)
	}
	cfg, _ := in.LoadConfig()
	switch f := o.getenv(EnvQsubFault); f {
	case "", QsubFaultHang, QsubFaultFail, QsubFaultSilent:
	default:
		fmt.Fprintf(o.Stderr, "qsub: pbsemu: %s=%q: want %s, %s or %s\n", EnvQsubFault, f, QsubFaultHang, QsubFaultFail, QsubFaultSilent)
		return 2
	}
	switch q := o.getenv(EnvQdelExitStatus); q {
	case "", QdelExitSignal, QdelExitZero, QdelExitJob:
		req.QdelExit = q
	default:
		fmt.Fprintf(o.Stderr, "qsub: pbsemu: %s=%q: want %s, %s or %s\n", EnvQdelExitStatus, q, QdelExitSignal, QdelExitZero, QdelExitJob)
		return 2
	}
	resp, err := in.call(Request{Op: "submit", Submit: req})
	if err != nil {
		fmt.Fprintf(o.Stderr, "System call failure.\nqsub: cannot connect to server %s (errno=%d)\n", cfg.ServerName, pbseSystem)
		return exitCode(pbseSystem)
	}
	if resp.Errno != 0 {
		fmt.Fprintf(o.Stderr, "qsub: %s\n", resp.Msg)
		return exitCode(resp.Errno)
	}
	// The job is queued; a configured fault loses the answer.
	fault := cfg.QsubFault
	if f := o.getenv(EnvQsubFault); f != "" {
		fault = f
	}
	switch fault {
	case QsubFaultHang:
		for {
			time.Sleep(time.Hour)
		}
	case QsubFaultFail:
		fmt.Fprintf(o.Stderr, "qsub: %s\n", pbseText(pbseProtocol))
		return exitCode(pbseProtocol)
	case QsubFaultSilent:
		return 0
	}
	if !opts.noPrint {
		fmt.Fprintln(o.Stdout, resp.ID)
	}
	if v, _ := getKV(opts.w, "block"); v == "true" {
		return blockUntilDone(in, resp.ID, o)
	}
	return 0
}

// arrayOptions checks -J X-Y[:Z][%N] and -W max_run_subjobs like qsub
// and its client-side attribute verification (qsub.c, chk_Jrange.c,
// ecl_verify_values.c) and puts them in the request. done means qsub exits
// with rc.
func arrayOptions(opts *qsubOpts, req *SubmitRequest, o IO) (rc int, done bool) {
	maxW, hasMaxW := getKV(opts.w, "max_run_subjobs")
	rng, maxJ, hasMaxJ := strings.Cut(opts.array, "%")
	isArray := opts.set['J']
	if isArray && opts.rerun == "n" {
		fmt.Fprint(o.Stderr, "qsub:  cannot submit non-rerunable Array Job\n")
		return usageError(o, nil), true
	}
	if hasMaxJ && hasMaxW {
		fmt.Fprint(o.Stderr, "qsub: multiple max_run_subjobs values found\n")
		return usageError(o, nil), true
	}
	if isArray {
		if _, _, _, ok := parseJRange(rng); !ok {
			return usageError(o, illegal('J')), true
		}
		req.Array = rng
	}
	if hasMaxJ || hasMaxW {
		v := maxJ
		if hasMaxW {
			v = maxW
		}
		// verify_datatype_long + verify_value_zero_or_positive
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			fmt.Fprintf(o.Stderr, "qsub: %s\n", pbseText(pbseBadAtVal))
			return exitCode(pbseBadAtVal), true
		}
		req.MaxRun = &n
	}
	return 0, false
}

// blockUntilDone implements -W block=true: wait for the job and exit with
// its exit status.
func blockUntilDone(in Instance, id string, o IO) int {
	for {
		time.Sleep(500 * time.Millisecond)
		resp, err := in.call(Request{Op: "stat", IDs: []string{id}, History: true})
		if err != nil || len(resp.Entries) == 0 || resp.Entries[0].Errno != 0 {
			continue
		}
		a := resp.Entries[0].Attrs
		if st, _ := attrValue(a, "job_state", ""); st == "F" {
			es, _ := attrValue(a, "Exit_status", "")
			n, _ := strconv.Atoi(es)
			fmt.Fprintf(o.Stdout, "Job %s completed with exit status %d\n", id, n)
			return n & 0xff
		}
	}
}

func absPath(p, cwd string) string {
	if p == "" {
		return ""
	}
	if h, rest, ok := strings.Cut(p, ":"); ok && !strings.Contains(h, "/") {
		if !filepath.IsAbs(rest) {
			rest = filepath.Join(cwd, rest)
		}
		return h + ":" + rest
	}
	if !filepath.IsAbs(p) {
		keepSlash := strings.HasSuffix(p, "/")
		p = filepath.Join(cwd, p)
		if keepSlash {
			p += "/"
		}
	}
	return p
}

// jobEnvBasic builds the PBS_O_* part of Variable_List like qsub does.
func jobEnvBasic(o IO, ui userInfo) []KeyVal {
	get := func(k, def string) string {
		if v, ok := o.lookupEnv(k); ok {
			return v
		}
		return def
	}
	vl := []KeyVal{{"PBS_O_HOME", get("HOME", ui.home)}}
	if v, ok := o.lookupEnv("LANG"); ok {
		vl = append(vl, KeyVal{"PBS_O_LANG", v})
	}
	vl = append(vl,
		KeyVal{"PBS_O_LOGNAME", get("LOGNAME", ui.name)},
		KeyVal{"PBS_O_PATH", get("PATH", "")},
		KeyVal{"PBS_O_MAIL", get("MAIL", "/var/mail/"+ui.name)},
		KeyVal{"PBS_O_SHELL", get("SHELL", ui.shell)},
	)
	if v, ok := o.lookupEnv("TZ"); ok {
		vl = append(vl, KeyVal{"PBS_O_TZ", v})
	}
	vl = append(vl,
		KeyVal{"PBS_O_INTERACTIVE_AUTH_METHOD", "resvport"},
		KeyVal{"PBS_O_INTERACTIVE_ENCRYPT_METHOD", ""},
		KeyVal{"PBS_O_WORKDIR", o.Cwd},
		KeyVal{"PBS_O_SYSTEM", "Linux"},
	)
	return vl
}

// errnoText gives the strerror text of a file error.
func errnoText(err error) string {
	var pe *os.PathError
	if errors.As(err, &pe) {
		s := pe.Err.Error()
		if s != "" {
			return strings.ToUpper(s[:1]) + s[1:]
		}
	}
	return err.Error()
}
