package schema

import (
	"strings"
)

// keyLines maps dotted TOML keys to the line that defines them. BurntSushi/toml
// knows these positions but does not export them, so the loader finds them
// with this small scanner. It understands [tables], [[arrays]], dotted and
// quoted keys, inline tables on one line, and skips multi-line strings and
// arrays. A key it cannot place resolves to its nearest placed parent.
type keyLines map[string]int

func locateKeys(data []byte) keyLines {
	kl := keyLines{}
	lines := strings.Split(string(data), "\n")
	var table []string
	inML := "" // the closing delimiter of a multi-line string, when inside one
	depth := 0 // bracket depth of a multi-line array value
	for i, raw := range lines {
		ln := i + 1
		line := raw
		if inML != "" {
			if idx := strings.Index(line, inML); idx >= 0 {
				inML = ""
				line = line[idx+3:]
			} else {
				continue
			}
			if depth == 0 {
				continue
			}
		}
		if depth > 0 {
			depth += bracketDelta(line, &inML)
			continue
		}
		t := strings.TrimSpace(stripComment(line))
		if t == "" {
			continue
		}
		if strings.HasPrefix(t, "[") {
			inner := strings.TrimPrefix(t, "[[")
			inner = strings.TrimPrefix(inner, "[")
			if j := strings.Index(inner, "]"); j >= 0 {
				inner = inner[:j]
			}
			table = splitKey(inner)
			kl.add(table, ln)
			continue
		}
		eq := findEquals(t)
		if eq < 0 {
			continue
		}
		key := append(append([]string{}, table...), splitKey(t[:eq])...)
		kl.add(key, ln)
		val := strings.TrimSpace(t[eq+1:])
		if strings.HasPrefix(val, "{") {
			for _, sub := range inlineKeys(val) {
				kl.add(append(append([]string{}, key...), sub), ln)
			}
		}
		depth = bracketDelta(val, &inML)
	}
	return kl
}

func (kl keyLines) add(key []string, line int) {
	k := strings.Join(key, ".")
	if _, ok := kl[k]; !ok {
		kl[k] = line
	}
}

// line returns the line of key, or of its nearest known parent, or 0.
func (kl keyLines) line(key string) int {
	for k := key; k != ""; {
		if l, ok := kl[k]; ok {
			return l
		}
		i := strings.LastIndexByte(k, '.')
		if i < 0 {
			break
		}
		k = k[:i]
	}
	return 0
}

// splitKey splits a (possibly dotted, possibly quoted) key.
func splitKey(s string) []string {
	var parts []string
	var cur strings.Builder
	quote := byte(0)
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case quote != 0:
			if c == '\\' && quote == '"' && i+1 < len(s) {
				i++
				cur.WriteByte(s[i])
			} else if c == quote {
				quote = 0
			} else {
				cur.WriteByte(c)
			}
		case c == '"' || c == '\'':
			quote = c
		case c == '.':
			parts = append(parts, strings.TrimSpace(cur.String()))
			cur.Reset()
		case c == ' ' || c == '\t':
		default:
			cur.WriteByte(c)
		}
	}
	return append(parts, strings.TrimSpace(cur.String()))
}

// findEquals returns the index of the key/value '=' outside quotes, or -1.
func findEquals(s string) int {
	quote := byte(0)
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case quote != 0:
			if c == quote {
				quote = 0
			}
		case c == '"' || c == '\'':
			quote = c
		case c == '=':
			return i
		}
	}
	return -1
}

// stripComment drops a # comment that is outside strings.
func stripComment(s string) string {
	quote := byte(0)
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case quote != 0:
			if c == '\\' && quote == '"' {
				i++
			} else if c == quote {
				quote = 0
			}
		case c == '"' || c == '\'':
			quote = c
		case c == '#':
			return s[:i]
		}
	}
	return s
}

// bracketDelta counts unbalanced [ ] outside strings; it notes the start of
// a multi-line string in *inML.
func bracketDelta(s string, inML *string) int {
	d := 0
	quote := byte(0)
	for i := 0; i < len(s); i++ {
		c := s[i]
		if quote != 0 {
			if c == '\\' && quote == '"' {
				i++
			} else if c == quote {
				quote = 0
			}
			continue
		}
		switch c {
		case '"', '\'':
			if strings.HasPrefix(s[i:], `"""`) || strings.HasPrefix(s[i:], `'''`) {
				delim := s[i : i+3]
				if j := strings.Index(s[i+3:], delim); j >= 0 {
					i += 3 + j + 2
					continue
				}
				*inML = delim
				return d
			}
			quote = c
		case '[', '{':
			d++
		case ']', '}':
			d--
		case '#':
			return d
		}
	}
	return d
}

// inlineKeys returns the top-level keys of a one-line inline table.
func inlineKeys(s string) []string {
	s = strings.TrimPrefix(strings.TrimSpace(s), "{")
	var keys []string
	quote := byte(0)
	depth := 0
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if quote != 0 {
			if c == '\\' && quote == '"' {
				i++
			} else if c == quote {
				quote = 0
			}
			continue
		}
		switch c {
		case '"', '\'':
			quote = c
		case '{', '[':
			depth++
		case '}', ']':
			depth--
			if depth < 0 {
				return keys
			}
		case '=':
			if depth == 0 {
				k := splitKey(s[start:i])
				if len(k) > 0 {
					keys = append(keys, k[0])
				}
			}
		case ',':
			if depth == 0 {
				start = i + 1
			}
		}
	}
	return keys
}
