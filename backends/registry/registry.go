// Package registry opens the backend a site names. It is the one place
// that knows every backend package.
package registry

import (
	"fmt"
	"log/slog"
	osuser "os/user"
	"path/filepath"
	"time"

	"github.com/tether-hpc/tether/backends"
	"github.com/tether-hpc/tether/backends/local"
	"github.com/tether-hpc/tether/backends/pbs"
	"github.com/tether-hpc/tether/backends/sbatch"
	"github.com/tether-hpc/tether/backends/slurmrest"
	"github.com/tether-hpc/tether/schema"
)

// Options carry what backends need from the caller.
type Options struct {
	// StateDir is the site's resolved state directory.
	StateDir string
	// Self is the argv that runs this tether binary (for the local
	// backend's supervisor).
	Self []string
	Log  *slog.Logger
}

// Open returns the backend of a site.
func Open(site *schema.Site, opts Options) (backends.Backend, error) {
	switch site.Backend {
	case schema.BackendSlurmREST:
		return openREST(site, opts)
	case schema.BackendPBS:
		b := pbs.New(site.PBS.BinDir, site.PBS.Server, site.PBS.Env)
		b.Place = site.PBS.Place
		b.Stageout = site.PBS.Stageout
		return b, nil
	case schema.BackendSbatch:
		return sbatch.New(site.Sbatch.BinDir, site.Sbatch.Env, site.Sbatch.UseAccounting()), nil
	case schema.BackendLocal:
		shim := append(append([]string{}, opts.Self...), "local-shim")
		b, err := local.New(filepath.Join(opts.StateDir, "local"), shim, site.Local.KillWait.D())
		if err == nil {
			b.LimitMemory = site.Local.LimitsMemory()
		}
		return b, err
	}
	return nil, fmt.Errorf("site %q: backend %q is not built into this tether", site.Name, site.Backend)
}

func openREST(site *schema.Site, opts Options) (backends.Backend, error) {
	c := site.SlurmREST
	var tok slurmrest.TokenSource
	switch {
	case c.TokenFile != "":
		ft := &slurmrest.FileToken{Path: c.TokenFile}
		if opts.Log != nil {
			ft.Warn = opts.Log.Warn
		}
		tok = ft
	case c.TokenEnv != "":
		tok = slurmrest.EnvToken{Name: c.TokenEnv}
	case len(c.TokenCommand) > 0:
		tok = &slurmrest.CommandToken{Argv: c.TokenCommand, MaxAge: 10 * time.Minute}
	}
	user := c.User
	if user == "" && tok != nil {
		if u, err := osuser.Current(); err == nil {
			user = u.Username
		}
	}
	return slurmrest.New(slurmrest.Config{
		URL: c.URL, APIVersion: c.APIVersion, User: user, Token: tok, TokenEnv: c.TokenEnv,
		Timeout: c.Timeout.D(), CacheDir: opts.StateDir, Log: opts.Log,
		NoLiveDetail: c.LiveDetail != nil && !*c.LiveDetail,
	})
}
