package rundir

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
)

// WriteFileAtomic writes data to a temp file in path's directory, syncs it
// and renames it over path, so readers see the old or the new content, never
// a mix, and the content survives a crash.
func WriteFileAtomic(path string, data []byte, perm os.FileMode) error {
	return writeAtomic(path, data, perm, true)
}

// WriteFileReplace is WriteFileAtomic without the fsync: readers still see
// whole files, but a crash may lose the write. For files that are rebuilt
// or used at once (job scripts handed to the scheduler, indexes).
func WriteFileReplace(path string, data []byte, perm os.FileMode) error {
	return writeAtomic(path, data, perm, false)
}

func writeAtomic(path string, data []byte, perm os.FileMode, durable bool) error {
	dir, base := filepath.Split(path)
	f, err := os.CreateTemp(dir, "."+base+".tmp*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	_, werr := f.Write(data)
	if werr == nil {
		werr = f.Chmod(perm)
	}
	if werr == nil && durable {
		werr = f.Sync()
	}
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr == nil {
		werr = os.Rename(tmp, path)
	}
	if werr != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, werr)
	}
	return nil
}

// Modes are the permissions of run files: private (0600 files, 0700
// directories and scripts) unless the site shares its state dir with a
// group (0640/0750). They are set explicitly, whatever the umask.
type Modes struct{ File, Dir os.FileMode }

// PrivateModes and GroupModes are the two file_mode settings.
var (
	PrivateModes = Modes{File: 0o600, Dir: 0o700}
	GroupModes   = Modes{File: 0o640, Dir: 0o750}
)

// ModesFor returns the modes of a site's file_mode setting.
func ModesFor(fileMode string) Modes {
	if fileMode == "group" {
		return GroupModes
	}
	return PrivateModes
}

// WriteJSON writes v as indented JSON, atomically, private (0600).
func WriteJSON(path string, v any) error {
	return WriteJSONMode(path, v, PrivateModes.File)
}

// WriteJSONMode is WriteJSON with the file's mode.
func WriteJSONMode(path string, v any, perm os.FileMode) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("encode %s: %w", path, err)
	}
	return WriteFileAtomic(path, append(b, '\n'), perm)
}

// ReadJSON decodes the JSON file at path into v.
func ReadJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s is damaged: %w", path, err)
	}
	return nil
}
