package schema

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"

	"github.com/BurntSushi/toml"
)

// LoadTask reads, decodes and validates a task file, applies --set
// overrides and the site's defaults, and resolves the workdir. Every problem
// is returned in an Errors value.
func LoadTask(path string, sets []string, site *Site) (*Task, error) {
	data, err := readFile(path)
	if err != nil {
		return nil, err
	}
	return ParseTask(path, data, sets, site)
}

// ParseTask is LoadTask for data already read; file names the source in errors
// and anchors a relative workdir.
func ParseTask(file string, data []byte, sets []string, site *Site) (*Task, error) {
	t, src, errs, decoded := decodeTask(file, data, sets)
	if !decoded {
		return nil, errs
	}
	t.src = src
	t.File = file
	if site != nil {
		t.applySiteDefaults(site)
	}
	t.resolveWorkdir(file)
	t.Resources.deriveNodes()
	errs = append(errs, t.validate(site)...)
	errs = append(errs, t.validateArray()...)
	if len(errs) == 0 {
		errs = append(errs, t.loadParams(file)...)
	}
	if site == nil && t.Resources.Walltime == 0 {
		errs = append(errs, src.errAt("resources.walltime", "is required"))
	}
	sortErrors(errs)
	if len(errs) > 0 {
		return nil, errs
	}
	return t, nil
}

func decodeTask(file string, data []byte, sets []string) (*Task, *source, Errors, bool) {
	t := DefaultTask()
	src, errs, decoded := decodeStrict(file, data, &t)
	if len(errs) > 0 || len(sets) == 0 {
		return &t, src, errs, decoded
	}
	var tree map[string]any
	if _, err := toml.Decode(string(data), &tree); err != nil {
		return &t, src, Errors{tomlError(src, err)}, false
	}
	keys, errs := applySets(tree, reflect.TypeOf(t), sets)
	if len(errs) > 0 {
		return &t, src, errs, false
	}
	var buf bytes.Buffer
	if err := toml.NewEncoder(&buf).Encode(tree); err != nil {
		return &t, src, Errors{{File: "--set", Msg: err.Error()}}, false
	}
	t = DefaultTask()
	_, errs, decoded = decodeStrict("--set", buf.Bytes(), &t)
	for _, e := range errs {
		e.File, e.Line = "--set", 0 // lines of the re-encoded document mean nothing to the user
	}
	src.overrides = keys
	return &t, src, errs, decoded
}

// applySiteDefaults fills what the task leaves to the site.
func (t *Task) applySiteDefaults(site *Site) {
	d := site.Defaults
	if t.Resources.Walltime == 0 {
		t.Resources.Walltime = d.Walltime
	}
	s := &t.Scheduler
	if s.Partition == "" && s.Queue == "" {
		s.Partition = d.Partition
	}
	fill := func(dst *string, v string) {
		if *dst == "" {
			*dst = v
		}
	}
	fill(&s.Account, d.Account)
	fill(&s.QoS, d.QoS)
	fill(&s.Reservation, d.Reservation)
	fill(&s.Constraint, d.Constraint)
}

func (t *Task) resolveWorkdir(file string) {
	base := filepath.Dir(file)
	if abs, err := filepath.Abs(base); err == nil {
		base = abs
	}
	switch {
	case t.Workdir == "":
		t.Workdir = base
	case !filepath.IsAbs(t.Workdir):
		t.Workdir = filepath.Join(base, t.Workdir)
	}
	t.Workdir = filepath.Clean(t.Workdir)
}

// CheckWorkdir reports a workdir that does not exist or is not a directory.
func (t *Task) checkWorkdir() *Error {
	fi, err := os.Stat(t.Workdir)
	switch {
	case err != nil && os.IsNotExist(err):
		return t.src.errAt("workdir", "directory %s does not exist", t.Workdir)
	case err != nil:
		return t.src.errAt("workdir", "cannot use %s: %v", t.Workdir, err)
	case !fi.IsDir():
		return t.src.errAt("workdir", "%s is not a directory", t.Workdir)
	}
	return nil
}
