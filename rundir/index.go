package rundir

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
)

// IndexVersion is the version of a site index entry.
const IndexVersion = 1

// SiteIndex maps run ids and idempotency keys to the site whose state
// directory holds the run, so a run is found without naming its site. It
// lives in the user's own state (not in any site's state directory):
// runs/<run id> and keys/<sha256 of the key>, one small JSON file each,
// written when a run is created or a key bound. An entry is a hint: the
// caller checks that the run is where the entry says.
type SiteIndex struct {
	Dir string
}

// IndexEntry is where one run lives.
type IndexEntry struct {
	V int `json:"v"`
	// Site is the site's name; SiteFile its file ("" for the embedded
	// local site); StateDir the state directory the run was made in.
	Site     string `json:"site"`
	SiteFile string `json:"site_file,omitempty"`
	StateDir string `json:"state_dir"`
	RunID    string `json:"run_id"`
	Key      string `json:"key,omitempty"`
}

func (x *SiteIndex) runPath(id string) string { return filepath.Join(x.Dir, "runs", id) }
func (x *SiteIndex) keyPath(key string) string {
	h := sha256.Sum256([]byte(key))
	return filepath.Join(x.Dir, "keys", hex.EncodeToString(h[:]))
}

// Put records where a run (and its key, when it has one) lives.
func (x *SiteIndex) Put(e IndexEntry) error {
	if x == nil || x.Dir == "" || !ValidRunID(e.RunID) {
		return nil
	}
	e.V = IndexVersion
	b, err := json.Marshal(e)
	if err != nil {
		return err
	}
	paths := []string{x.runPath(e.RunID)}
	if e.Key != "" {
		paths = append(paths, x.keyPath(e.Key))
	}
	for _, p := range paths {
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			return err
		}
		if err := WriteFileReplace(p, append(b, '\n'), 0o600); err != nil {
			return err
		}
	}
	return nil
}

// Lookup returns the entry of a run id.
func (x *SiteIndex) Lookup(id string) (IndexEntry, bool) {
	if x == nil || x.Dir == "" || !ValidRunID(id) {
		return IndexEntry{}, false
	}
	return x.read(x.runPath(id))
}

// LookupKey returns the entry of the run last bound to a key.
func (x *SiteIndex) LookupKey(key string) (IndexEntry, bool) {
	if x == nil || x.Dir == "" || key == "" {
		return IndexEntry{}, false
	}
	return x.read(x.keyPath(key))
}

func (x *SiteIndex) read(p string) (IndexEntry, bool) {
	var e IndexEntry
	if err := ReadJSON(p, &e); err != nil || e.V != IndexVersion || e.StateDir == "" {
		return IndexEntry{}, false
	}
	return e, true
}

// Remove drops a run's entry, and its key's when the key still points at
// that run.
func (x *SiteIndex) Remove(id, key string) error {
	if x == nil || x.Dir == "" || !ValidRunID(id) {
		return nil
	}
	err := os.Remove(x.runPath(id))
	if errors.Is(err, os.ErrNotExist) {
		err = nil
	}
	if key != "" {
		if e, ok := x.read(x.keyPath(key)); ok && e.RunID == id {
			if kerr := os.Remove(x.keyPath(key)); kerr != nil && !errors.Is(kerr, os.ErrNotExist) && err == nil {
				err = kerr
			}
		}
	}
	return err
}
