package slurmrest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/tether-hpc/tether/backends"
	g40 "github.com/tether-hpc/tether/backends/slurmrest/internal/v0040"
	g41 "github.com/tether-hpc/tether/backends/slurmrest/internal/v0041"
	g42 "github.com/tether-hpc/tether/backends/slurmrest/internal/v0042"
)

// wirePair is a wire type and the generated type of one version it
// stands for.
type wirePair struct {
	name string
	wire any // a pointer to the wire type
	gen  any // a pointer to the generated type
	// absent are the wire fields (dotted JSON paths) this version's spec
	// does not have: its answers leave them out.
	absent []string
}

func wirePairs() map[string][]wirePair {
	return map[string][]wirePair{
		"v0.0.40": {
			{"submit", &wireSubmitReq{}, &g40.V0040JobSubmitReq{}, nil},
			{"submit answer", &wireSubmitResp{}, &g40.V0040OpenapiJobSubmitResponse{}, nil},
			{"jobs", &wireJobs{}, &g40.V0040OpenapiJobInfoResp{}, nil},
			{"jobs/state", &wireStates{}, &g40.V0040OpenapiJobStateResp{}, nil},
			{"cancel", &wireCancel{}, &g40.V0040OpenapiResp{}, []string{"status"}},
			{"ping", &wirePing{}, &g40.V0040OpenapiPingArrayResp{}, []string{"pings.responding"}},
			{"node", &wireNodes{}, &g40.V0040OpenapiNodesResp{}, nil},
			{"partitions", &wirePartitions{}, &g40.V0040OpenapiPartitionResp{}, nil},
		},
		"v0.0.41": {
			{"submit", &wireSubmitReq{}, &g41.V0041JobSubmitReq{}, nil},
			{"submit answer", &wireSubmitResp{}, &g41.V0041OpenapiJobSubmitResponse{}, nil},
			{"jobs", &wireJobs{}, &g41.V0041OpenapiJobInfoResp{}, nil},
			{"jobs/state", &wireStates{}, &g41.V0041OpenapiJobStateResp{}, nil},
			{"cancel", &wireCancel{}, &g41.V0041OpenapiResp{}, []string{"status"}},
			{"ping", &wirePing{}, &g41.V0041OpenapiPingArrayResp{}, []string{"pings.responding"}},
			{"node", &wireNodes{}, &g41.V0041OpenapiNodesResp{}, nil},
			{"partitions", &wirePartitions{}, &g41.V0041OpenapiPartitionResp{}, nil},
		},
		"v0.0.42": {
			{"submit", &wireSubmitReq{}, &g42.V0042JobSubmitReq{}, nil},
			{"submit answer", &wireSubmitResp{}, &g42.V0042OpenapiJobSubmitResponse{}, nil},
			{"jobs", &wireJobs{}, &g42.V0042OpenapiJobInfoResp{}, nil},
			{"jobs/state", &wireStates{}, &g42.V0042OpenapiJobStateResp{}, nil},
			{"cancel", &wireCancel{}, &g42.V0042OpenapiKillJobResp{}, nil},
			{"ping", &wirePing{}, &g42.V0042OpenapiPingArrayResp{}, nil},
			{"node", &wireNodes{}, &g42.V0042OpenapiNodesResp{}, nil},
			{"partitions", &wirePartitions{}, &g42.V0042OpenapiPartitionResp{}, nil},
		},
	}
}

// Every field of every wire type is a field of each version's generated
// type, of the same JSON shape: a wire value with every field set decodes
// strictly (unknown fields refused) into the generated type and encodes
// back to the same JSON. A field one version's spec lacks must be listed
// in absent, which is checked too (it must really be unknown there).
func TestWireTypesMatchEachVersion(t *testing.T) {
	for version, pairs := range wirePairs() {
		for _, p := range pairs {
			t.Run(version+"/"+p.name, func(t *testing.T) {
				fill(reflect.ValueOf(p.wire).Elem())
				raw, err := json.Marshal(p.wire)
				if err != nil {
					t.Fatal(err)
				}
				var want any
				if err := json.Unmarshal(raw, &want); err != nil {
					t.Fatal(err)
				}
				for _, path := range p.absent {
					one := deepCopy(t, want)
					keepOnly(one, strings.Split(path, "."))
					if err := strictDecode(one, reflect.New(reflect.TypeOf(p.gen).Elem()).Interface()); err == nil {
						t.Errorf("%s is listed absent but the %s spec has it", path, version)
					}
					drop(want, strings.Split(path, "."))
				}
				gen := p.gen
				if err := strictDecode(want, gen); err != nil {
					t.Fatalf("a wire field is not in the %s spec (or not of its shape): %v\n%s", version, err, raw)
				}
				back, err := json.Marshal(gen)
				if err != nil {
					t.Fatal(err)
				}
				var got any
				if err := json.Unmarshal(back, &got); err != nil {
					t.Fatal(err)
				}
				if err := subset(want, got, ""); err != nil {
					t.Errorf("%s: %v\nwire %s\ngen  %s", version, err, raw, back)
				}
			})
		}
	}
}

// The allocation (tres_alloc_str) is read once, by the one adapter, from
// the captured answers of every version of slurmrestd 24.11.
func TestAllocationEveryVersion(t *testing.T) {
	for _, v := range []string{"v0040", "v0041", "v0042"} {
		version := "v0.0." + v[3:]
		t.Run(version, func(t *testing.T) {
			st, err := decodeJob(t, version, capture(t, v, "2411-"+version+"-get-job-completed.json"))
			if err != nil {
				t.Fatal(err)
			}
			if want := (backends.Allocation{Nodes: 1, CPUs: 1}); st.Alloc != want {
				t.Errorf("allocation %+v, want %+v", st.Alloc, want)
			}
			// a GPU job's answer: the field travels through the wire type
			raw := []byte(`{"jobs":[{"job_id":7,"job_state":["COMPLETED"],"tres_alloc_str":"cpu=8,mem=16G,node=2,billing=8,gres/gpu=4,gres/gpu:a100=4"}]}`)
			st, err = decodeJob(t, version, raw)
			if err != nil {
				t.Fatal(err)
			}
			if want := (backends.Allocation{Nodes: 2, CPUs: 8, GPUs: 4, MemoryMiB: 16 << 10}); st.Alloc != want {
				t.Errorf("allocation %+v, want %+v", st.Alloc, want)
			}
		})
	}
}

func strictDecode(v any, into any) error {
	raw, err := json.Marshal(v)
	if err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	return dec.Decode(into)
}

func deepCopy(t *testing.T, v any) any {
	raw, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var out any
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// walk applies f to the objects at path's parent (arrays: each element).
func walk(v any, path []string, f func(m map[string]any, key string)) {
	switch x := v.(type) {
	case []any:
		for _, e := range x {
			walk(e, path, f)
		}
	case map[string]any:
		if len(path) == 1 {
			f(x, path[0])
			return
		}
		walk(x[path[0]], path[1:], f)
	}
}

func drop(v any, path []string) { walk(v, path, func(m map[string]any, k string) { delete(m, k) }) }

// keepOnly leaves at path's parent only that key (and the path to it).
func keepOnly(v any, path []string) {
	if m, ok := v.(map[string]any); ok {
		for k := range m {
			if k != path[0] {
				delete(m, k)
			}
		}
		if len(path) > 1 {
			keepOnly(m[path[0]], path[1:])
		}
	}
	if a, ok := v.([]any); ok {
		for _, e := range a {
			keepOnly(e, path)
		}
	}
}

// subset checks that every value of want is in got.
func subset(want, got any, at string) error {
	switch w := want.(type) {
	case map[string]any:
		g, ok := got.(map[string]any)
		if !ok {
			return fmt.Errorf("%s: %v, want an object", at, got)
		}
		for _, k := range slices.Sorted(maps.Keys(w)) {
			if err := subset(w[k], g[k], at+"."+k); err != nil {
				return err
			}
		}
	case []any:
		g, ok := got.([]any)
		if !ok || len(g) != len(w) {
			return fmt.Errorf("%s: %v, want %v", at, got, want)
		}
		for i := range w {
			if err := subset(w[i], g[i], fmt.Sprintf("%s[%d]", at, i)); err != nil {
				return err
			}
		}
	default:
		if !reflect.DeepEqual(want, got) {
			return fmt.Errorf("%s: %v, want %v", at, got, want)
		}
	}
	return nil
}

// fill sets every field of v to a value that is not its zero.
func fill(v reflect.Value) {
	switch v.Kind() {
	case reflect.Pointer:
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		fill(v.Elem())
	case reflect.Struct:
		for i := range v.NumField() {
			fill(v.Field(i))
		}
	case reflect.Slice:
		s := reflect.MakeSlice(v.Type(), 1, 1)
		fill(s.Index(0))
		v.Set(s)
	case reflect.String:
		v.SetString("x")
	case reflect.Int, reflect.Int64, reflect.Int32:
		v.SetInt(7)
	case reflect.Bool:
		v.SetBool(true)
	}
}
