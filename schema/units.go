package schema

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Duration is a time span written in TOML as a string: a Go duration
// ("90s", "1h30m"), days ("7d", "1d12h") or a Slurm-style time ("MM", "MM:SS", "HH:MM:SS",
// "D-HH", "D-HH:MM", "D-HH:MM:SS").
type Duration time.Duration

// D returns the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// UnmarshalText parses a duration string.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := ParseDuration(string(b))
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// MarshalText writes the duration in Go syntax ("1h30m0s").
func (d Duration) MarshalText() ([]byte, error) {
	return []byte(time.Duration(d).String()), nil
}

// ParseDuration accepts Go durations and Slurm time formats.
func ParseDuration(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, fmt.Errorf("empty duration")
	}
	if i := strings.IndexByte(s, 'd'); i > 0 && !strings.Contains(s, "-") {
		// "7d", "1d12h": days first, then a Go duration
		days, err := strconv.Atoi(s[:i])
		if err == nil && days >= 0 && days < 36500 {
			rest := time.Duration(0)
			if s[i+1:] != "" {
				if rest, err = time.ParseDuration(s[i+1:]); err != nil || rest < 0 {
					return 0, fmt.Errorf("invalid duration %q", s)
				}
			}
			return time.Duration(days)*24*time.Hour + rest, nil
		}
	}
	if d, err := time.ParseDuration(s); err == nil {
		if d < 0 {
			return 0, fmt.Errorf("duration %q is negative", s)
		}
		return d, nil
	}
	d, err := parseSlurmTime(s)
	if err != nil {
		return 0, fmt.Errorf("invalid duration %q: want e.g. \"90s\", \"1h30m\", \"01:30:00\" or \"1-12:00:00\"", s)
	}
	return d, nil
}

func parseSlurmTime(s string) (time.Duration, error) {
	days := 0
	rest := s
	if i := strings.IndexByte(s, '-'); i >= 0 {
		n, err := strconv.Atoi(s[:i])
		if err != nil || n < 0 {
			return 0, fmt.Errorf("bad days")
		}
		days, rest = n, s[i+1:]
	}
	parts := strings.Split(rest, ":")
	nums := make([]int, len(parts))
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 || len(p) == 0 {
			return 0, fmt.Errorf("bad number")
		}
		nums[i] = n
	}
	var h, m, sec int
	if strings.Contains(s, "-") {
		// D-HH, D-HH:MM, D-HH:MM:SS
		switch len(nums) {
		case 1:
			h = nums[0]
		case 2:
			h, m = nums[0], nums[1]
		case 3:
			h, m, sec = nums[0], nums[1], nums[2]
		default:
			return 0, fmt.Errorf("bad format")
		}
	} else {
		// MM, MM:SS, HH:MM:SS
		switch len(nums) {
		case 1:
			m = nums[0]
		case 2:
			m, sec = nums[0], nums[1]
		case 3:
			h, m, sec = nums[0], nums[1], nums[2]
		default:
			return 0, fmt.Errorf("bad format")
		}
	}
	total := time.Duration(days)*24*time.Hour + time.Duration(h)*time.Hour +
		time.Duration(m)*time.Minute + time.Duration(sec)*time.Second
	if total < 0 || total > 365*24*time.Hour*100 {
		return 0, fmt.Errorf("out of range")
	}
	return total, nil
}

// Memory is an amount of memory in MiB, written in TOML as a string with a
// unit: "512M", "4G", "4GiB", "1T". A bare number means MiB, like sbatch.
type Memory int64

// MiB returns the amount in mebibytes.
func (m Memory) MiB() int64 { return int64(m) }

// UnmarshalText parses a memory string.
func (m *Memory) UnmarshalText(b []byte) error {
	v, err := ParseMemory(string(b))
	if err != nil {
		return err
	}
	*m = Memory(v)
	return nil
}

// MarshalText writes the amount as "<n>M".
func (m Memory) MarshalText() ([]byte, error) {
	return []byte(strconv.FormatInt(int64(m), 10) + "M"), nil
}

// ParseMemory parses "4G", "512M", "4GiB", "1T", "2048" (MiB) into MiB.
func ParseMemory(s string) (int64, error) {
	t := strings.TrimSpace(s)
	if t == "" {
		return 0, fmt.Errorf("empty memory amount")
	}
	u := strings.ToUpper(t)
	u = strings.TrimSuffix(strings.TrimSuffix(u, "IB"), "B")
	mult := 1.0
	if n := len(u); n > 0 {
		switch u[n-1] {
		case 'K':
			mult, u = 1.0/1024, u[:n-1]
		case 'M':
			u = u[:n-1]
		case 'G':
			mult, u = 1024, u[:n-1]
		case 'T':
			mult, u = 1024*1024, u[:n-1]
		}
	}
	f, err := strconv.ParseFloat(strings.TrimSpace(u), 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, fmt.Errorf("invalid memory amount %q: want e.g. \"512M\", \"4G\", \"1T\"", s)
	}
	if f < 0 {
		return 0, fmt.Errorf("memory amount %q is negative", s)
	}
	v := math.Ceil(f * mult)
	if v > 1<<40 {
		return 0, fmt.Errorf("memory amount %q is too large", s)
	}
	return int64(v), nil
}
