package schema

import (
	"encoding/json"
	"reflect"
	"strconv"
	"strings"
)

// JSONSchema returns a JSON Schema (draft 2020-12) for the task ("task")
// or site ("site") file format, for TOML editors such as Taplo.
func JSONSchema(kind string) ([]byte, bool) {
	var t reflect.Type
	var title string
	switch kind {
	case "task":
		t, title = reflect.TypeOf(Task{}), "tether task spec"
	case "site":
		t, title = reflect.TypeOf(Site{}), "tether site config"
	default:
		return nil, false
	}
	s := structSchema(t)
	s["$schema"] = "https://json-schema.org/draft/2020-12/schema"
	s["$id"] = "https://github.com/tether-hpc/tether/schema/" + kind + ".json"
	s["title"] = title
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return nil, false
	}
	return append(b, '\n'), true
}

var (
	durationType = reflect.TypeOf(Duration(0))
	memoryType   = reflect.TypeOf(Memory(0))
)

func structSchema(t reflect.Type) map[string]any {
	props := map[string]any{}
	var required []string
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name := tomlName(f)
		if name == "" {
			continue
		}
		p := typeSchema(f.Type)
		if d := f.Tag.Get("doc"); d != "" {
			p["description"] = d
		}
		if e := f.Tag.Get("enum"); e != "" {
			p["enum"] = strings.Split(e, ",")
		}
		if m := f.Tag.Get("min"); m != "" {
			n, _ := strconv.ParseFloat(m, 64)
			p["minimum"] = n
		}
		if m := f.Tag.Get("max"); m != "" {
			n, _ := strconv.ParseFloat(m, 64)
			p["maximum"] = n
		}
		if f.Tag.Get("required") == "true" {
			required = append(required, name)
		}
		props[name] = p
	}
	s := map[string]any{"type": "object", "properties": props, "additionalProperties": false}
	if len(required) > 0 {
		s["required"] = required
	}
	return s
}

func typeSchema(t reflect.Type) map[string]any {
	switch t {
	case durationType:
		return map[string]any{"type": "string", "pattern": `^(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+$|^(\d+-)?\d+(:\d+){0,2}$`}
	case memoryType:
		return map[string]any{"type": "string", "pattern": `^\d+(\.\d+)?\s*([KkMmGgTt](i?[Bb])?)?$`}
	}
	switch t.Kind() {
	case reflect.Pointer:
		return typeSchema(t.Elem())
	case reflect.String:
		return map[string]any{"type": "string"}
	case reflect.Bool:
		return map[string]any{"type": "boolean"}
	case reflect.Int, reflect.Int64:
		return map[string]any{"type": "integer"}
	case reflect.Float64:
		return map[string]any{"type": "number"}
	case reflect.Slice:
		return map[string]any{"type": "array", "items": typeSchema(t.Elem())}
	case reflect.Map:
		return map[string]any{"type": "object", "additionalProperties": typeSchema(t.Elem())}
	case reflect.Struct:
		return structSchema(t)
	}
	return map[string]any{}
}
