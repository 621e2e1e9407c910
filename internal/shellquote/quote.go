// Package shellquote quotes strings for bash.
package shellquote

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
