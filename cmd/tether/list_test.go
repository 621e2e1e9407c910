package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// writeListJSON writes what encoding/json writes, for every kind of string.
func TestListJSONMatchesEncodingJSON(t *testing.T) {
	at := time.Date(2026, 12, 5, 1, 2, 3, 456789, time.FixedZone("x", 3600))
	entries := []listEntry{
		{RunID: "a-1", Name: "plain", State: "succeeded", JobID: "17", Attempts: 1, Created: at, RunDir: "/s/runs/a-1"},
		{RunID: "b-2", Name: "n", State: "ended", JobID: "18,19 (array of 3)", Attempts: 2, Key: `dag/"run"\<x>&y` + "\n\t\x01é\u2028", Created: at.UTC(), RunDir: "/s/r", Reason: "ended, not decided yet: would finish"},
		{RunID: "c-3", Name: "", State: "", JobID: "", Created: time.Time{}},
	}
	for _, in := range [][]listEntry{{}, entries} {
		var got bytes.Buffer
		if err := writeListJSON(&got, in); err != nil {
			t.Fatal(err)
		}
		want, _ := json.Marshal(in)
		if strings.TrimSuffix(got.String(), "\n") != string(want) {
			t.Errorf("got  %s\nwant %s", got.String(), want)
		}
	}
}

// writeListText pads like the tabwriter it replaced.
func TestListTextColumns(t *testing.T) {
	now := time.Now()
	var out bytes.Buffer
	writeListText(&out, []listEntry{
		{RunID: "long-run-id-1", State: "succeeded", JobID: "1", Attempts: 1, Created: now},
		{RunID: "r2", State: "ended", JobID: "12345", Attempts: 10, Created: now},
	}, now)
	want := "RUN            STATE      JOB    ATTEMPTS  CREATED\n" +
		"long-run-id-1  succeeded  1      1         0s ago\n" +
		"r2             ended      12345  10        0s ago\n"
	if out.String() != want {
		t.Errorf("got\n%s\nwant\n%s", out.String(), want)
	}
}
