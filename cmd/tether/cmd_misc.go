package main

import (
	"context"
	"errors"
	"fmt"
	"github.com/tether-hpc/tether/health"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/spf13/cobra"
	"github.com/tether-hpc/tether/backends"
	"github.com/tether-hpc/tether/backends/local"
	"github.com/tether-hpc/tether/schema"
	siteconfigs "github.com/tether-hpc/tether/site-configs"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "0.1.0-dev"

func (a *app) versionCmd() *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "version",
		Short: "Print tether's version",
		Args:  usageArgs(cobra.NoArgs),
		RunE: func(*cobra.Command, []string) error {
			commit := ""
			if bi, ok := debug.ReadBuildInfo(); ok {
				for _, s := range bi.Settings {
					if s.Key == "vcs.revision" {
						commit = s.Value
					}
				}
			}
			if asJSON {
				return printJSON(a.stdout, map[string]string{"version": version, "commit": commit, "go": runtime.Version()})
			}
			fmt.Fprintf(a.stdout, "tether %s (%s %s/%s)\n", version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
			return nil
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return c
}

// validateResult is one file's verdict in `validate --json`.
type validateResult struct {
	File   string          `json:"file"`
	Kind   string          `json:"kind"`
	OK     bool            `json:"ok"`
	Errors []validateError `json:"errors,omitempty"`
}

type validateError struct {
	File    string `json:"file"`
	Line    int    `json:"line,omitempty"`
	Key     string `json:"key,omitempty"`
	Message string `json:"message"`
}

func (a *app) validateCmd() *cobra.Command {
	var asJSON bool
	var kind string
	var sets []string
	c := &cobra.Command{
		Use:   "validate [flags] FILE...",
		Short: "Check task and site files (errors name file, line and key)",
		Long: `validate checks each file strictly: unknown keys, wrong types, missing
fields and impossible values are errors that name the file, line and key.
A file with a "backend" key is a site; any other is a task, checked against
the site given with --site (its defaults and maximum walltime).`,
		Args: usageArgs(cobra.MinimumNArgs(1)),
		RunE: func(_ *cobra.Command, files []string) error {
			var results []validateResult
			bad := 0
			var site *schema.Site
			var siteErr error
			for _, f := range files {
				k := kind
				if k == "" {
					k = detectKind(f)
				}
				var err error
				switch k {
				case "site":
					_, err = schema.LoadSite(f)
				case "task":
					if site == nil && siteErr == nil {
						site, siteErr = a.loadSite()
					}
					if siteErr != nil {
						err = siteErr
					} else {
						_, err = schema.LoadTask(f, sets, site)
					}
				default:
					return usageError{fmt.Errorf("--kind %q: want task or site", kind)}
				}
				r := validateResult{File: f, Kind: k, OK: err == nil}
				if err != nil {
					bad++
					r.Errors = toValidateErrors(err, f)
				}
				results = append(results, r)
			}
			if asJSON {
				if err := printJSON(a.stdout, results); err != nil {
					return err
				}
			} else {
				for _, r := range results {
					if r.OK {
						fmt.Fprintf(a.stdout, "ok %s (%s)\n", r.File, r.Kind)
						continue
					}
					for _, e := range r.Errors {
						fmt.Fprintln(a.stderr, formatValidateError(e))
					}
				}
			}
			if bad > 0 {
				return withCode(ExitBadInput, fmt.Errorf("%d of %d files have errors", bad, len(files)))
			}
			return nil
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print results as a JSON array")
	c.Flags().StringVar(&kind, "kind", "", "task or site (default: detect)")
	c.Flags().StringArrayVar(&sets, "set", nil, "override a task key (repeatable)")
	return c
}

func formatValidateError(e validateError) string {
	return (&schema.Error{File: e.File, Line: e.Line, Key: e.Key, Msg: e.Message}).Error()
}

func toValidateErrors(err error, file string) []validateError {
	var es schema.Errors
	if errors.As(err, &es) {
		out := make([]validateError, len(es))
		for i, e := range es {
			out[i] = validateError{File: e.File, Line: e.Line, Key: e.Key, Message: e.Msg}
		}
		return out
	}
	return []validateError{{File: file, Message: err.Error()}}
}

// detectKind reads just enough of a file to tell a site from a task.
func detectKind(path string) string {
	var probe map[string]any
	if _, err := toml.DecodeFile(path, &probe); err == nil {
		if _, ok := probe["backend"]; ok {
			return "site"
		}
	}
	return "task"
}

func (a *app) schemaCmd() *cobra.Command {
	return &cobra.Command{
		Use:       "schema task|site",
		Short:     "Print the JSON Schema of task or site files (for TOML editors)",
		ValidArgs: []string{"task", "site"},
		Args:      usageArgs(cobra.ExactArgs(1)),
		RunE: func(_ *cobra.Command, args []string) error {
			b, ok := schema.JSONSchema(args[0])
			if !ok {
				return usageError{fmt.Errorf("unknown schema %q: want task or site", args[0])}
			}
			_, err := a.stdout.Write(b)
			return err
		},
	}
}

// siteEntry is one row of `tether sites`.
type siteEntry struct {
	Name    string `json:"name"`
	Backend string `json:"backend"`
	File    string `json:"file"`
	Error   string `json:"error,omitempty"`
	// BadNodes are the nodes on the site's bad-node list now.
	BadNodes []health.Node `json:"bad_nodes,omitempty"`
}

// badNodesOf reads a site's bad-node list (nil without one).
func badNodesOf(s *schema.Site) []health.Node {
	dir, err := s.ResolvedStateDir()
	if err != nil {
		return nil
	}
	nodes, _ := health.Open(dir, s).Nodes()
	return nodes
}

func (a *app) sitesCmd() *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "sites [flags]",
		Short: "List the sites tether can find",
		Long:  "Sites are looked up in $TETHER_SITE_PATH, ./site-configs and /etc/tether/sites (and one level of subfolders).",
		Args:  usageArgs(cobra.NoArgs),
		RunE: func(*cobra.Command, []string) error {
			rows := []siteEntry{{Name: siteconfigs.DefaultLocalName, Backend: schema.BackendLocal, File: "(embedded default)"}}
			for _, f := range siteFiles() {
				e := siteEntry{Name: filepath.Base(f[:len(f)-len(".toml")]), File: f}
				if s, err := schema.LoadSite(f); err != nil {
					e.Error = err.Error()
				} else {
					a.overrideStateDir(s)
					e.Name, e.Backend, e.BadNodes = s.Name, s.Backend, badNodesOf(s)
				}
				rows = append(rows, e)
			}
			if asJSON {
				return printJSON(a.stdout, rows)
			}
			tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tBACKEND\tFILE\tBAD NODES")
			for _, r := range rows {
				b := r.Backend
				if r.Error != "" {
					b = "invalid"
				}
				bad := make([]string, len(r.BadNodes))
				for i, n := range r.BadNodes {
					bad[i] = fmt.Sprintf("%s (%d failures, until %s)", n.Name, n.Failures, n.Until.Local().Format(time.DateTime))
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r.Name, b, r.File, strings.Join(bad, ", "))
			}
			return tw.Flush()
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print a JSON array")
	c.AddCommand(a.sitesCheckCmd())
	return c
}

func (a *app) sitesCheckCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "check [NAME|PATH]",
		Short: "Check that a site's state directory and scheduler work",
		Args:  usageArgs(cobra.MaximumNArgs(1)),
		RunE: func(c *cobra.Command, args []string) error {
			if len(args) == 1 {
				a.siteArg = args[0]
			}
			site, err := a.loadSite()
			if err != nil {
				return err
			}
			s, err := a.open(site)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(c.Context(), site.SlurmREST.Timeout.D())
			defer cancel()
			detail := "state directory " + s.store.Dir + " is writable"
			if p, ok := s.backend.(backends.Pinger); ok {
				msg, err := p.Ping(ctx)
				if err != nil {
					return fmt.Errorf("site %s: %w", site.Name, err)
				}
				detail += "; " + msg
			} else if _, err := s.backend.Query(ctx, nil); err != nil {
				return fmt.Errorf("site %s: %w", site.Name, err)
			}
			fmt.Fprintf(a.stdout, "ok %s (%s): %s\n", site.Name, site.Backend, detail)
			return nil
		},
	}
}

func (a *app) shimCmd() *cobra.Command {
	return &cobra.Command{
		Use:    "local-shim JOBFILE",
		Short:  "Supervise one local job (started by the local backend)",
		Hidden: true,
		Args:   usageArgs(cobra.ExactArgs(1)),
		RunE: func(c *cobra.Command, args []string) error {
			if local.IsArrayFile(args[0]) {
				return local.RunArrayShim(context.Background(), args[0])
			}
			return local.RunShim(context.Background(), args[0])
		},
	}
}
