// Package registry opens the backend a site names. It is the one place
// that knows every backend package.
package registry

import (
	"fmt"
	"path/filepath"

	"github.com/tether-hpc/tether/backends"
	"github.com/tether-hpc/tether/backends/local"
	"github.com/tether-hpc/tether/backends/sbatch"
	"github.com/tether-hpc/tether/schema"
)

// Options carry what backends need from the caller.
type Options struct {
	// StateDir is the site's resolved state directory.
	StateDir string
	// Self is the argv that runs this tether binary (for the local
	// backend's supervisor).
	Self []string
}

// Open returns the backend of a site.
func Open(site *schema.Site, opts Options) (backends.Backend, error) {
	switch site.Backend {
	case schema.BackendSbatch:
		return sbatch.New(site.Sbatch.BinDir, site.Sbatch.Env, site.Sbatch.UseAccounting()), nil
	case schema.BackendLocal:
		shim := append(append([]string{}, opts.Self...), "local-shim")
		return local.New(filepath.Join(opts.StateDir, "local"), shim, site.Local.KillWait.D())
	}
	return nil, fmt.Errorf("site %q: backend %q is not built into this tether", site.Name, site.Backend)
}
