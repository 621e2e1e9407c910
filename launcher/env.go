package launcher

import (
	"crypto/sha256"
	"encoding/hex"
	"slices"
	"strings"

	"github.com/tether-hpc/tether/schema"
)

// SafeDeny is the built-in deny-list of propagate = "safe": secrets,
// workflow-engine credentials, cloud credentials, agent sockets and
// tickets, and the submitter's own batch-job variables (a job must not
// inherit its submitter's allocation). Globs end in '*'; a leading '*'
// (with a trailing one) matches the name anywhere.
var SafeDeny = []string{
	"AIRFLOW__*", "AIRFLOW_CONN_*", "AIRFLOW_VAR_*",
	"*PASSWORD*", "*PASSWD*", "*SECRET*", "*TOKEN*", "*CREDENTIAL*", "*_KEY", "*APIKEY*",
	"AWS_*", "GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_CREDENTIALS", "AZURE_*",
	"SSH_AUTH_SOCK", "SSH_AGENT_PID", "GPG_AGENT_INFO", "KRB5CCNAME", "KRB5_KTNAME",
	"SLURM_*", "SBATCH_*", "SALLOC_*", "SRUN_*", "PBS_*", "PMI_*", "PMIX_*", "OMPI_*",
}

// alwaysDeny is never passed: tether's own variables (the wrapper sets
// them) and the JWT of slurmrestd.
var alwaysDeny = []string{"TETHER_*", "SLURM_JWT"}

// volatileEnv changes between tries of the same Airflow task (another
// worker process, another try) without changing what the job does: it is
// passed but left out of the run's identity.
var volatileEnv = []string{
	"AIRFLOW_CTX_TRY_NUMBER", "PWD", "OLDPWD", "SHLVL", "_", "HOSTNAME", "HOST",
	"INVOCATION_ID", "JOURNAL_STREAM", "SYSTEMD_EXEC_PID", "TERM", "COLUMNS", "LINES",
	"SSH_CLIENT", "SSH_CONNECTION", "SSH_TTY", "TMUX", "TMUX_PANE", "XDG_SESSION_ID",
}

// matchEnv reports whether name matches one of globs: NAME, PREFIX*, or
// *PART* (anywhere) and *SUFFIX.
func matchEnv(name string, globs []string) bool {
	for _, g := range globs {
		switch {
		case g == "*":
			return true
		case strings.HasPrefix(g, "*") && strings.HasSuffix(g, "*") && len(g) > 1:
			if strings.Contains(name, g[1:len(g)-1]) {
				return true
			}
		case strings.HasPrefix(g, "*"):
			if strings.HasSuffix(name, g[1:]) {
				return true
			}
		case strings.HasSuffix(g, "*"):
			if strings.HasPrefix(name, g[:len(g)-1]) {
				return true
			}
		case g == name:
			return true
		}
	}
	return false
}

// JobEnv applies the site's policy (and the Task's pass_env, which
// validation allowed) to the submitter's environment. It returns what the
// job gets and the names withheld, sorted. Values are never logged. The
// variable a slurmrest site reads its JWT from never passes.
func JobEnv(site *schema.Site, passEnv []string, environ []string) (map[string]string, []string) {
	policy := site.Env
	if t := site.SlurmREST.TokenEnv; t != "" {
		policy.Deny = append(slices.Clone(policy.Deny), t)
	}
	pass := map[string]string{}
	var withheld []string
	for _, kv := range environ {
		name, value, ok := strings.Cut(kv, "=")
		if !ok || name == "" {
			continue
		}
		if jobGets(policy, passEnv, name) {
			pass[name] = value
		} else {
			withheld = append(withheld, name)
		}
	}
	slices.Sort(withheld)
	return pass, slices.Compact(withheld)
}

func jobGets(policy schema.EnvPolicy, passEnv []string, name string) bool {
	if matchEnv(name, alwaysDeny) || matchEnv(name, policy.Deny) {
		return false
	}
	if matchEnv(name, passEnv) {
		return true
	}
	switch policy.Propagate {
	case schema.PropagateNone:
		return false
	case schema.PropagateAll:
		return true
	case schema.PropagateList:
		return matchEnv(name, policy.Allow)
	}
	return matchEnv(name, policy.Allow) || !matchEnv(name, SafeDeny) // safe
}

// EnvHash is the identity of a job environment for idempotency: the
// names and values that do not change between tries of one task.
func EnvHash(env map[string]string) string {
	names := make([]string, 0, len(env))
	for k := range env {
		if !matchEnv(k, volatileEnv) {
			names = append(names, k)
		}
	}
	slices.Sort(names)
	h := sha256.New()
	for _, k := range names {
		h.Write([]byte(k + "=" + env[k] + "\x00"))
	}
	return hex.EncodeToString(h.Sum(nil))
}

// EnvDiff names the variables (not their values) in which two job
// environments differ, volatile ones left out.
func EnvDiff(a, b map[string]string) []string {
	var out []string
	for k, v := range a {
		if w, ok := b[k]; (!ok || w != v) && !matchEnv(k, volatileEnv) {
			out = append(out, k)
		}
	}
	for k := range b {
		if _, ok := a[k]; !ok && !matchEnv(k, volatileEnv) {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}
