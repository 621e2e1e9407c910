package slurmrest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"
)

// TokenSource supplies the JWT for X-SLURM-USER-TOKEN. Tokens never appear
// in errors or logs: errors say where the token comes from, never what it is.
type TokenSource interface {
	Token(ctx context.Context) (string, error)
	// Invalidate drops a cached token after the server refused it.
	Invalidate()
	// Describe says where the token comes from ("token file /x").
	Describe() string
}

// cleanToken strips "SLURM_JWT=" (what `scontrol token` prints) and space.
func cleanToken(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndex(s, "SLURM_JWT="); i >= 0 {
		s = s[i+len("SLURM_JWT="):]
	}
	if i := strings.IndexAny(s, " \t\r\n"); i >= 0 {
		s = s[:i]
	}
	return s
}

// FileToken rereads its file whenever the file changes.
type FileToken struct {
	Path string
	// Warn, when set, is told once that the file is readable by users
	// other than its owner (anyone who can read a JWT can act as its user).
	Warn   func(msg string, args ...any)
	mu     sync.Mutex
	mtime  time.Time
	size   int64
	value  string
	warned bool
}

// Exposed says why a token file is readable by others ("" when it is not):
// group or world read permission lets those users act as the token's user.
func Exposed(mode os.FileMode) string {
	switch p := mode.Perm(); {
	case p&0o004 != 0:
		return fmt.Sprintf("mode %04o: every user on the host can read it", p)
	case p&0o040 != 0:
		return fmt.Sprintf("mode %04o: its group can read it", p)
	}
	return ""
}

func (f *FileToken) Token(context.Context) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fi, err := os.Stat(f.Path)
	if err != nil {
		return "", fmt.Errorf("token file %s: %w", f.Path, errors.Unwrap(err))
	}
	if why := Exposed(fi.Mode()); why != "" && !f.warned && f.Warn != nil {
		f.warned = true
		f.Warn("the JWT file is readable by others: anyone who reads it can act as its user; chmod 600 it",
			"token_file", f.Path, "why", why)
	}
	if f.value == "" || !fi.ModTime().Equal(f.mtime) || fi.Size() != f.size {
		b, err := os.ReadFile(f.Path)
		if err != nil {
			return "", fmt.Errorf("token file %s: cannot read it", f.Path)
		}
		f.value, f.mtime, f.size = cleanToken(string(b)), fi.ModTime(), fi.Size()
	}
	if f.value == "" {
		return "", fmt.Errorf("token file %s is empty", f.Path)
	}
	return f.value, nil
}

func (f *FileToken) Invalidate() {
	f.mu.Lock()
	f.value = ""
	f.mu.Unlock()
}

func (f *FileToken) Describe() string { return "token file " + f.Path }

// EnvToken reads an environment variable on every request.
type EnvToken struct{ Name string }

func (e EnvToken) Token(context.Context) (string, error) {
	v := cleanToken(os.Getenv(e.Name))
	if v == "" {
		return "", fmt.Errorf("environment variable %s (token_env) is not set", e.Name)
	}
	return v, nil
}

func (EnvToken) Invalidate()        {}
func (e EnvToken) Describe() string { return "environment variable " + e.Name }

// CommandToken runs a command (e.g. scontrol token lifespan=3600) and keeps
// its token until it is refused or MaxAge passes.
type CommandToken struct {
	Argv   []string
	MaxAge time.Duration
	mu     sync.Mutex
	value  string
	at     time.Time
}

func (c *CommandToken) Token(ctx context.Context) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.value != "" && (c.MaxAge == 0 || time.Since(c.at) < c.MaxAge) {
		return c.value, nil
	}
	cmd := exec.CommandContext(ctx, c.Argv[0], c.Argv[1:]...)
	cmd.Env = withoutJWT(os.Environ())
	out, err := cmd.Output()
	if err != nil {
		// stdout may hold a token: never include it; stderr only when it
		// does not look like one
		msg := err.Error()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			if s := strings.TrimSpace(string(ee.Stderr)); s != "" && !strings.Contains(s, "eyJ") {
				if len(s) > 300 {
					s = s[:300] + "..."
				}
				msg += ": " + s
			}
		}
		return "", fmt.Errorf("token command %s failed: %s", c.Argv[0], msg)
	}
	c.value, c.at = cleanToken(string(out)), time.Now()
	if c.value == "" {
		return "", fmt.Errorf("token command %s printed no token", c.Argv[0])
	}
	return c.value, nil
}

func (c *CommandToken) Invalidate() {
	c.mu.Lock()
	c.value = ""
	c.mu.Unlock()
}

func (c *CommandToken) Describe() string { return "token command " + c.Argv[0] }

func withoutJWT(env []string) []string {
	out := env[:0:0]
	for _, kv := range env {
		if !strings.HasPrefix(kv, "SLURM_JWT=") {
			out = append(out, kv)
		}
	}
	return out
}
