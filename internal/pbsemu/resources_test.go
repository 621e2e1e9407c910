package pbsemu

import (
	"strings"
	"testing"
	"time"
)

func TestResolveResources(t *testing.T) {
	tests := []struct {
		name  string
		req   string // comma-separated -l list
		want  map[string]string
		errno int
		msg   string
	}{
		{name: "default chunk", req: "",
			want: map[string]string{"select": "1:ncpus=1", "ncpus": "1", "nodect": "1", "place": "free"}},
		{name: "capture 09 mpi", req: "select=1:ncpus=2:mpiprocs=2,walltime=00:01:00",
			want: map[string]string{"select": "1:ncpus=2:mpiprocs=2", "ncpus": "2", "mpiprocs": "2", "nodect": "1", "place": "free", "walltime": "00:01:00"}},
		{name: "capture 11 ncpus8", req: "select=1:ncpus=8,walltime=00:00:10",
			want: map[string]string{"select": "1:ncpus=8", "ncpus": "8", "nodect": "1", "place": "free", "walltime": "00:00:10"}},
		{name: "sums", req: "select=2:ncpus=4:mem=2gb:ngpus=1,place=scatter:excl",
			want: map[string]string{"select": "2:ncpus=4:mem=2gb:ngpus=1", "ncpus": "8", "mem": "4gb", "ngpus": "2", "nodect": "2", "place": "scatter:excl"}},
		{name: "chunk count only", req: "select=2",
			want: map[string]string{"select": "2:ncpus=1", "ncpus": "2", "nodect": "2"}},
		{name: "walltime seconds", req: "walltime=3600", want: map[string]string{"walltime": "01:00:00"}},
		{name: "walltime mm:ss", req: "walltime=1:30", want: map[string]string{"walltime": "00:01:30"}},
		{name: "job-wide ncpus", req: "ncpus=4,mem=1gb", want: map[string]string{"select": "1:ncpus=4:mem=1gb", "ncpus": "4", "mem": "1gb"}},
		{name: "torque nodes", req: "nodes=2:ppn=4", want: map[string]string{"select": "2:ncpus=4:mpiprocs=4", "mpiprocs": "8"}},
		{name: "capture 10 bad walltime", req: "walltime=abc", errno: pbseBadAtVal,
			msg: "Illegal attribute or resource value Resource_List.walltime"},
		{name: "capture 10 unknown chunk resource", req: "select=1:ncpus=1:foo=2", errno: pbseUnkResc, msg: "Unknown resource: foo"},
		{name: "unknown resource", req: "foo=1", errno: pbseUnkResc, msg: "Unknown resource Resource_List.foo"},
		{name: "bad place", req: "place=everywhere", errno: pbseBadAtVal, msg: "Illegal attribute or resource value Resource_List.place"},
		{name: "bad select", req: "select=1:ncpus=x", errno: pbseBadAtVal, msg: "Illegal attribute or resource value Resource_List.select"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var req []KeyVal
			for _, p := range splitResourceList(tc.req) {
				k, v, _ := strings.Cut(p, "=")
				req = append(req, KeyVal{k, v})
			}
			rr, err := resolveResources(req, nil)
			if tc.errno != 0 {
				if err == nil || err.errno != tc.errno || err.msg != tc.msg {
					t.Fatalf("got %v, want errno %d %q", err, tc.errno, tc.msg)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for k, v := range tc.want {
				if rr.List[k] != v {
					t.Errorf("Resource_List.%s = %q, want %q (all: %v)", k, rr.List[k], v, rr.List)
				}
			}
		})
	}
}

func TestJSONValueTyping(t *testing.T) {
	for v, want := range map[string]bool{
		"0": true, "3": true, "-29": true, "271": true, "1.5": true, "0.5": true, "1e3": true,
		"00:00:10": false, "0kb": false, "007": false, "True": false, "": false, " ": false,
		"1795723155": true, "pbshost/0": false, "inf": false,
	} {
		if got := isJSONNumber(v); got != want {
			t.Errorf("isJSONNumber(%q) = %v, want %v", v, got, want)
		}
	}
	for in, want := range map[string]string{
		`a"b`:    `a\"b`,
		`a\"b`:   `a\"b`,
		`x\,y`:   `x,y`,
		"t\tn\n": `t\tn\n`,
		`c:\d`:   `c:\d`,
	} {
		if got := jsonEscape(in); got != want {
			t.Errorf("jsonEscape(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestVariableListRoundTrip(t *testing.T) {
	vl := []KeyVal{{"A", "1"}, {"B", "x,y"}, {"C", ""}, {"D", "k=v"}}
	got := splitVariableList(variableListString(vl))
	if len(got) != len(vl) {
		t.Fatalf("got %v", got)
	}
	for i := range vl {
		if got[i] != vl[i] {
			t.Errorf("entry %d: got %v want %v", i, got[i], vl[i])
		}
	}
}

func TestDirectivesAndOptions(t *testing.T) {
	script := "#!/bin/bash\n#PBS -N fromscript\n#PBS -l select=1:ncpus=2\n\n#PBS -l walltime=00:01:00 # comment\n# plain comment\necho hi\n#PBS -N ignored\n"
	var dir qsubOpts
	if ops, _, err := parseQsubArgs(scriptDirectives(script, "#PBS"), &dir); err != nil || len(ops) > 0 {
		t.Fatalf("directives: %v %v", ops, err)
	}
	var cl qsubOpts
	ops, _, err := parseQsubArgs([]string{"-N", "cmdline", "-l", "walltime=00:02:00", "-hz", "job.sh"}, &cl)
	if err != nil || len(ops) != 1 || ops[0] != "job.sh" {
		t.Fatalf("cmdline: %v %v", ops, err)
	}
	dir.merge(&cl)
	if dir.name != "cmdline" || !dir.hold || !dir.noPrint {
		t.Errorf("merge: name=%q hold=%v z=%v", dir.name, dir.hold, dir.noPrint)
	}
	if v, _ := getKV(dir.res, "walltime"); v != "00:02:00" {
		t.Errorf("walltime = %q, command line must win", v)
	}
	if v, _ := getKV(dir.res, "select"); v != "1:ncpus=2" {
		t.Errorf("select = %q, directive must stay", v)
	}
	for _, bad := range [][]string{{"-j", "xx"}, {"-r", "maybe"}, {"-N", "a b"}, {"-N", "sim[1]"}, {"-N", "a=b"}, {"-N", "x,y"}, {"-N", "job#1"}, {"-N", "été"}, {"-N", "-lead"}, {"-N", strings.Repeat("a", 237)}, {"-W", "bogus=1"}, {"-p", "5000"}, {"-Y"}} {
		var o qsubOpts
		if _, _, err := parseQsubArgs(bad, &o); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
}

func TestJobNames(t *testing.T) {
	for _, ok := range []string{"a", "9lives", "run-1.a_b+c", strings.Repeat("a", 236)} {
		var o qsubOpts
		if _, _, err := parseQsubArgs([]string{"-N", ok, "job.sh"}, &o); err != nil || o.name != ok {
			t.Errorf("-N %q refused: %v", ok, err)
		}
	}
}

func TestParseDateTime(t *testing.T) {
	now := time.Date(2026, 11, 26, 19, 0, 0, 0, time.Local)
	got, ok := parseDateTime("2030", now)
	if !ok || time.Unix(got, 0).Format("15:04") != "20:30" {
		t.Errorf("2030 -> %v %v", time.Unix(got, 0), ok)
	}
	got, ok = parseDateTime("1830", now) // earlier today: tomorrow
	if !ok || time.Unix(got, 0).Day() != 27 {
		t.Errorf("1830 -> %v", time.Unix(got, 0))
	}
	if _, ok := parseDateTime("abc", now); ok {
		t.Error("abc accepted")
	}
}
