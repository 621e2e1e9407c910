package schema

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// LoadSite reads, decodes and validates a site file.
func LoadSite(path string) (*Site, error) {
	data, err := readFile(path)
	if err != nil {
		return nil, err
	}
	return ParseSite(path, data)
}

// ParseSite decodes and validates site data; file names it in errors.
func ParseSite(file string, data []byte) (*Site, error) {
	// -1 marks an evidence grace the file leaves out ("0s" turns it off)
	s := Site{Version: SiteVersion, Poll: Poll{EvidenceGrace: -1}}
	src, errs, decoded := decodeStrict(file, data, &s)
	if !decoded {
		return nil, errs
	}
	graceUnset := s.Poll.EvidenceGrace == -1
	if graceUnset {
		s.Poll.EvidenceGrace = 0
	}
	s.File = file
	errs = append(errs, s.validate(src)...)
	sortErrors(errs)
	if err := errs.Err(); err != nil {
		return nil, err
	}
	s.applyDefaults()
	if graceUnset {
		s.Poll.EvidenceGrace = Duration(10 * time.Second)
		if s.Backend == BackendLocal {
			s.Poll.EvidenceGrace = Duration(time.Second)
		}
	}
	return &s, nil
}

// applyDefaults fills what the file leaves out, per backend.
// DefaultMaxQueriesPerMinute is a Slurm site's status query budget: a
// query every 6 s at the most, whatever the number of runs. A run that
// ends by itself is decided from its exit file without a query; what
// needs the scheduler (a signalled end, a job gone quiet) can wait that
// long. Measured on the 22.05 test cluster, PSI/J at 5 s costs 25 status
// RPCs a minute and its default (30 s) 4.9 (issue 17's table).
const DefaultMaxQueriesPerMinute = 10

// DefaultMaxQueriesPerMinutePBS is a PBS site's budget: a qstat every
// 10 s at the most (a PBS server is slower to answer than slurmctld).
const DefaultMaxQueriesPerMinutePBS = 6

func setN(n *int, v int) {
	if *n == 0 {
		*n = v
	}
}

func (s *Site) applyDefaults() {
	setD := func(d *Duration, v time.Duration) {
		if *d == 0 {
			*d = Duration(v)
		}
	}
	switch s.Backend {
	case BackendLocal:
		setD(&s.Poll.MinInterval, 200*time.Millisecond)
		setD(&s.Poll.MaxInterval, 2*time.Second)
		setD(&s.Poll.VanishGrace, 5*time.Second)
		setD(&s.Poll.RecoverAfter, 10*time.Second)
	case BackendPBS:
		setD(&s.Poll.MinInterval, 5*time.Second)
		setD(&s.Poll.MaxInterval, 60*time.Second)
		setD(&s.Poll.VanishGrace, 2*time.Minute)
		setN(&s.Poll.MaxQueriesPerMinute, DefaultMaxQueriesPerMinutePBS)
	default:
		setD(&s.Poll.MinInterval, 2*time.Second)
		setD(&s.Poll.MaxInterval, 30*time.Second)
		setD(&s.Poll.VanishGrace, 2*time.Minute)
		setN(&s.Poll.MaxQueriesPerMinute, DefaultMaxQueriesPerMinute)
	}
	if s.Poll.MaxInterval < s.Poll.MinInterval {
		s.Poll.MaxInterval = s.Poll.MinInterval
	}
	setD(&s.Poll.RecoverAfter, 2*time.Minute)
	setD(&s.Poll.PendingAlertAfter, time.Hour)
	setD(&s.Limits.CacheFor, 10*time.Minute)
	setD(&s.Local.KillWait, 5*time.Second)
	setD(&s.SlurmREST.Timeout, 30*time.Second)
	if s.MPI.Launcher == "" {
		s.MPI.Launcher = map[string]string{
			BackendSbatch: LauncherSrun, BackendSlurmREST: LauncherSrun,
			BackendPBS: LauncherMpiexec, BackendLocal: LauncherMpirun,
		}[s.Backend]
	}
	if s.MPI.SrunMPI == "" {
		s.MPI.SrunMPI = "pmix"
	}
	if s.MPI.MpiexecStyle == "" {
		s.MPI.MpiexecStyle = "hostfile"
	}
	if s.SlurmREST.APIVersion == "" {
		s.SlurmREST.APIVersion = "auto"
	}
}

// DefaultStateDir is $XDG_STATE_HOME/tether, else ~/.local/state/tether.
func DefaultStateDir() (string, error) {
	if x := os.Getenv("XDG_STATE_HOME"); x != "" && filepath.IsAbs(x) {
		return filepath.Join(x, "tether"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("no state directory: set XDG_STATE_HOME or HOME: %w", err)
	}
	return filepath.Join(home, ".local", "state", "tether"), nil
}

// ResolvedStateDir is the site's state_dir, or the default when unset.
func (s *Site) ResolvedStateDir() (string, error) {
	if s.StateDir != "" {
		return s.StateDir, nil
	}
	return DefaultStateDir()
}

// ErrSiteNotFound is returned when a site name is on no search path.
var ErrSiteNotFound = errors.New("site not found")

// SiteSearchPath is where site names are looked up: $TETHER_SITE_PATH
// (colon-separated), ./site-configs, /etc/tether/sites.
func SiteSearchPath() []string {
	var dirs []string
	if p := os.Getenv("TETHER_SITE_PATH"); p != "" {
		for _, d := range filepath.SplitList(p) {
			if d != "" {
				dirs = append(dirs, d)
			}
		}
	}
	return append(dirs, "site-configs", "/etc/tether/sites")
}

// FindSite turns a site argument into a file path. An argument with a path
// separator or a .toml suffix is a path; a NAME is looked up as NAME.toml in
// each search directory (and its subdirectories one level down).
func FindSite(arg string, dirs []string) (string, error) {
	if strings.ContainsRune(arg, os.PathSeparator) || strings.HasSuffix(arg, ".toml") {
		return arg, nil
	}
	for _, d := range dirs {
		for _, pattern := range []string{filepath.Join(d, arg+".toml"), filepath.Join(d, "*", arg+".toml")} {
			m, _ := filepath.Glob(pattern)
			if len(m) > 0 {
				return m[0], nil
			}
		}
	}
	return "", fmt.Errorf("%w: %q is not in %s (set TETHER_SITE_PATH or pass a path)", ErrSiteNotFound, arg, strings.Join(dirs, ", "))
}
