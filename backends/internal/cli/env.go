package cli

import (
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/tether-hpc/tether/backends"
)

// Bin is the path of a command: in BinDir, or the bare name for $PATH.
func (r *Runner) Bin(name string) string {
	if r.BinDir == "" {
		return name
	}
	return filepath.Join(r.BinDir, name)
}

// Environ is the commands' environment: tether's own without the Hide
// variables, then Env in name order.
func (r *Runner) Environ() []string {
	var env []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if !slices.Contains(r.Hide, name) {
			env = append(env, kv)
		}
	}
	return append(env, backends.EnvList(r.Env)...)
}
