package launcher

import "strings"

// Quote returns s as one bash word that expands to exactly s: single quotes
// around everything, with each ' written as '\”. Newlines, $, `, globs and
// any byte other than NUL survive unchanged (NUL cannot be in argv anyway).
func Quote(s string) string {
	if s == "" {
		return "''"
	}
	safe := true
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
			strings.ContainsRune("-_./:=,+@%", c)) {
			safe = false
			break
		}
	}
	if safe {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// word is one word of a generated command line: a literal, or a reference
// to an environment variable that the wrapper expands at run time (such
// as PBS_NODEFILE).
type word struct {
	lit string
	env string
}

func lit(s string) word { return word{lit: s} }
func lits(s ...string) []word {
	w := make([]word, len(s))
	for i, x := range s {
		w[i] = lit(x)
	}
	return w
}

func (w word) shell() string {
	if w.env != "" {
		return `"${` + w.env + `}"`
	}
	return Quote(w.lit)
}

// String renders a word for display (dry runs, logs).
func (w word) String() string {
	if w.env != "" {
		return "$" + w.env
	}
	return w.lit
}
