package schema

import (
	"errors"
	"fmt"
	"os"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/BurntSushi/toml"
)

// source remembers where a decoded file came from, so validation errors can
// name the line of a key.
type source struct {
	file      string
	lines     keyLines
	overrides map[string]bool // keys set with --set
}

func (s *source) errAt(key, format string, args ...any) *Error {
	if s == nil {
		return &Error{Key: key, Msg: fmt.Sprintf(format, args...)}
	}
	if s.overrides[key] {
		return &Error{File: "--set", Key: key, Msg: fmt.Sprintf(format, args...)}
	}
	return &Error{File: s.file, Line: s.lines.line(key), Key: key, Msg: fmt.Sprintf(format, args...)}
}

// typeErrRe reads the position out of BurntSushi/toml's type-mismatch
// errors, which are plain errors rather than toml.ParseError values.
var typeErrRe = regexp.MustCompile(`^toml: (?:line (\d+) )?\(last key "([^"]*)"\): (.*)$`)

// decodeStrict decodes data over dst, reporting syntax errors, type errors
// and unknown keys as *Error values with file, line and key. decoded is
// false when dst could not be filled (syntax or type errors); unknown keys
// alone leave it true, so validation can still report the rest.
func decodeStrict(file string, data []byte, dst any) (src *source, errs Errors, decoded bool) {
	src = &source{file: file, lines: locateKeys(data)}
	md, err := toml.Decode(string(data), dst)
	if err != nil {
		return src, Errors{tomlError(src, err)}, false
	}
	for _, k := range md.Undecoded() {
		key := k.String()
		msg := "unknown key"
		if s := suggest(reflect.TypeOf(dst).Elem(), k); s != "" {
			msg += fmt.Sprintf(" (did you mean %q?)", s)
		}
		errs = append(errs, src.errAt(key, "%s", msg))
	}
	return src, errs, true
}

func tomlError(src *source, err error) *Error {
	var pe toml.ParseError
	if errors.As(err, &pe) {
		msg := pe.Message
		if pe.Usage != "" {
			msg += " (" + strings.TrimSpace(pe.Usage) + ")"
		}
		return &Error{File: src.file, Line: pe.Position.Line, Key: pe.LastKey, Msg: msg}
	}
	if m := typeErrRe.FindStringSubmatch(err.Error()); m != nil {
		line, _ := strconv.Atoi(m[1])
		if line == 0 {
			line = src.lines.line(m[2])
		}
		return &Error{File: src.file, Line: line, Key: m[2], Msg: friendlyType(m[3])}
	}
	return &Error{File: src.file, Msg: err.Error()}
}

func friendlyType(msg string) string {
	msg = strings.Replace(msg, "incompatible types: TOML value has type", "wrong type: the file has", 1)
	msg = strings.Replace(msg, "; destination has type", ", tether expects", 1)
	msg = strings.Replace(msg, "tether expects []", "tether expects array of ", 1)
	msg = strings.Replace(msg, "tether expects map", "tether expects table", 1)
	if strings.Contains(msg, "expects schema.Duration") || strings.Contains(msg, "expects schema.Memory") {
		msg = strings.Replace(msg, "schema.Duration", "a duration string such as \"30m\"", 1)
		msg = strings.Replace(msg, "schema.Memory", "a memory string such as \"4G\"", 1)
	}
	return msg
}

// suggest finds the known key closest to an unknown one in the same table.
func suggest(t reflect.Type, key toml.Key) string {
	for _, part := range key[:len(key)-1] {
		f, ok := fieldByTag(t, part)
		if !ok {
			return ""
		}
		t = f.Type
		if t.Kind() != reflect.Struct {
			return ""
		}
	}
	if t.Kind() != reflect.Struct {
		return ""
	}
	want := key[len(key)-1]
	best, bestD := "", 3
	for i := 0; i < t.NumField(); i++ {
		name := tomlName(t.Field(i))
		if name == "" {
			continue
		}
		d := editDistance(want, name)
		if len(name) >= 4 && (strings.HasPrefix(want, name) || strings.HasPrefix(name, want)) {
			d = min(d, 2)
		}
		if d < bestD {
			best, bestD = name, d
		}
	}
	return best
}

func tomlName(f reflect.StructField) string {
	tag := f.Tag.Get("toml")
	if tag == "-" || !f.IsExported() {
		return ""
	}
	if i := strings.IndexByte(tag, ','); i >= 0 {
		tag = tag[:i]
	}
	return tag
}

func fieldByTag(t reflect.Type, name string) (reflect.StructField, bool) {
	for i := 0; i < t.NumField(); i++ {
		if tomlName(t.Field(i)) == name {
			return t.Field(i), true
		}
	}
	return reflect.StructField{}, false
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			c := 1
			if a[i-1] == b[j-1] {
				c = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+c)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// readFile reads a config file, turning I/O errors into *Error.
func readFile(path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		var msg string
		switch {
		case errors.Is(err, os.ErrNotExist):
			msg = "file does not exist"
		case errors.Is(err, os.ErrPermission):
			msg = "permission denied"
		default:
			msg = err.Error()
		}
		return nil, Errors{{File: path, Msg: msg}}
	}
	return data, nil
}

// applySets applies key=value overrides to a decoded TOML tree. The value
// is parsed as a TOML value, except for string-typed keys, which take it
// verbatim.
func applySets(tree map[string]any, typ reflect.Type, sets []string) (map[string]bool, Errors) {
	keys := map[string]bool{}
	var errs Errors
	for _, s := range sets {
		k, v, ok := strings.Cut(s, "=")
		k = strings.TrimSpace(k)
		if !ok || k == "" {
			errs = append(errs, &Error{File: "--set", Key: k, Msg: fmt.Sprintf("%q is not key=value", s)})
			continue
		}
		path := splitKey(k)
		kind, known := keyKind(typ, path)
		if !known {
			errs = append(errs, &Error{File: "--set", Key: k, Msg: "unknown key"})
			continue
		}
		var val any = v
		if kind != reflect.String {
			var m map[string]any
			if _, err := toml.Decode("v = "+v, &m); err == nil {
				val = m["v"]
			} else if kind == reflect.Slice || kind == reflect.Bool || kind == reflect.Int || kind == reflect.Float64 {
				errs = append(errs, &Error{File: "--set", Key: k, Msg: fmt.Sprintf("%q is not a valid TOML value for this key", v)})
				continue
			}
		}
		node := tree
		for _, p := range path[:len(path)-1] {
			next, ok := node[p].(map[string]any)
			if !ok {
				next = map[string]any{}
				node[p] = next
			}
			node = next
		}
		node[path[len(path)-1]] = val
		keys[strings.Join(path, ".")] = true
	}
	return keys, errs
}

// keyKind finds the Go kind behind a dotted key; text-unmarshalled types
// (durations, memory) and map values count as strings.
func keyKind(t reflect.Type, path []string) (reflect.Kind, bool) {
	textType := reflect.TypeOf((*interface{ UnmarshalText([]byte) error })(nil)).Elem()
	for i, p := range path {
		switch t.Kind() {
		case reflect.Struct:
			f, ok := fieldByTag(t, p)
			if !ok {
				return 0, false
			}
			t = f.Type
		case reflect.Map:
			t = t.Elem()
		default:
			return 0, false
		}
		if i == len(path)-1 {
			if reflect.PointerTo(t).Implements(textType) {
				return reflect.String, true
			}
			return t.Kind(), true
		}
	}
	return 0, false
}

// sortErrors orders errors by file and line for stable output.
func sortErrors(errs Errors) {
	sort.SliceStable(errs, func(i, j int) bool {
		if errs[i].File != errs[j].File {
			return errs[i].File < errs[j].File
		}
		return errs[i].Line < errs[j].Line
	})
}
