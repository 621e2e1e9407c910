package schema

import (
	"regexp"
	"testing"
)

// The hand-written checkers must accept exactly what the regexps they
// replaced accepted.
func TestValidNameMatchesRegexp(t *testing.T) {
	name64 := regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)
	name128 := regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)
	env := regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	long := func(n int) string {
		b := make([]byte, n)
		for i := range b {
			b[i] = 'a'
		}
		return string(b)
	}
	cases := []string{"", "a", "A9", "9", "_a", ".a", "-a", "a.b_c-d", "a b", "a/b", "é", "a\n", "a..b",
		"FOO_BAR", "foo1", "1foo", "_", "__x", "a$", long(63), long(64), long(65), long(127), long(128), long(129)}
	for _, s := range cases {
		if got, want := ValidName(s, 64), name64.MatchString(s); got != want {
			t.Errorf("ValidName(%q, 64) = %v, regexp says %v", s, got, want)
		}
		if got, want := ValidName(s, 128), name128.MatchString(s); got != want {
			t.Errorf("ValidName(%q, 128) = %v, regexp says %v", s, got, want)
		}
		if got, want := validEnvKey(s), env.MatchString(s); got != want {
			t.Errorf("validEnvKey(%q) = %v, regexp says %v", s, got, want)
		}
	}
}

func FuzzValidName(f *testing.F) {
	name64 := regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)
	env := regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	f.Add("task-1.a_b")
	f.Fuzz(func(t *testing.T, s string) {
		if ValidName(s, 64) != name64.MatchString(s) {
			t.Fatalf("ValidName(%q) disagrees with the regexp", s)
		}
		if validEnvKey(s) != env.MatchString(s) {
			t.Fatalf("validEnvKey(%q) disagrees with the regexp", s)
		}
	})
}
