package launcher

import "github.com/tether-hpc/tether/internal/shellquote"

// Quote returns s as one bash word (see shellquote.Quote).
func Quote(s string) string { return shellquote.Quote(s) }

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
