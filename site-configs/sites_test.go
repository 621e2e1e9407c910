package siteconfigs

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/tether-hpc/tether/schema"
)

// Every site file shipped in this folder is valid, and the embedded
// default is the local.toml beside it.
func TestSiteFilesAreValid(t *testing.T) {
	files, _ := filepath.Glob("*.toml")
	more, _ := filepath.Glob("*/*.toml")
	files = append(files, more...)
	if len(files) == 0 {
		t.Fatal("no site files found")
	}
	for _, f := range files {
		if _, err := schema.LoadSite(f); err != nil {
			t.Errorf("%v", err)
		}
	}
	b, _ := os.ReadFile("local.toml")
	if string(b) != string(DefaultLocal) {
		t.Error("embedded default differs from local.toml")
	}
	s, err := schema.ParseSite("embedded", DefaultLocal)
	if err != nil || s.Name != DefaultLocalName || s.Backend != schema.BackendLocal {
		t.Errorf("default site: %+v %v", s, err)
	}
}
