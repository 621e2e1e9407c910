// Package units reads and writes the time spans and memory amounts of HPC
// requests and schedulers, for tether's own files (schema) and the
// backends alike: walltimes as Go durations ("90m"), days ("1d12h") or
// Slurm-style times ("02:00:00", "1-12:00:00"), and memory with a unit
// ("512M", "16G").
package units

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// ParseDuration reads a time span: a Go duration ("90s", "1h30m"), days
// ("7d", "1d12h") or a Slurm-style time ("MM", "MM:SS", "HH:MM:SS", "D-HH",
// "D-HH:MM", "D-HH:MM:SS").
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

// parseSlurmTime reads the colon forms (with days: "D-HH...").
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
	if len(nums) > 3 {
		return 0, fmt.Errorf("bad format")
	}
	// hms is hours, minutes, seconds: D-HH, D-HH:MM, D-HH:MM:SS fill it
	// from the hours, MM and MM:SS from the minutes, HH:MM:SS all of it
	var hms [3]int
	if !strings.Contains(s, "-") && len(nums) < 3 {
		copy(hms[1:], nums)
	} else {
		copy(hms[:], nums)
	}
	h, m, sec := hms[0], hms[1], hms[2]
	total := time.Duration(days)*24*time.Hour + time.Duration(h)*time.Hour +
		time.Duration(m)*time.Minute + time.Duration(sec)*time.Second
	if total < 0 || total > 365*24*time.Hour*100 {
		return 0, fmt.Errorf("out of range")
	}
	return total, nil
}

// ParseMemory reads an amount of memory into MiB: "4G", "512M", "4GiB",
// "1T", "1024K"; a bare number means MiB, like sbatch.
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

// FormatMemory writes an amount of MiB as "<n>M".
func FormatMemory(mib int64) string { return strconv.FormatInt(mib, 10) + "M" }

// ParseLimit reads a time limit as a scheduler prints it ("1:00:00",
// "2-00:00:00", "45"); none ("UNLIMITED", "N/A", empty) or one it cannot
// read gives 0.
func ParseLimit(s string) time.Duration {
	d, err := ParseDuration(s)
	if err != nil {
		return 0
	}
	return d
}

// FormatHMS writes a time span as "HH:MM:SS" (hours beyond 99 as they
// come), rounded up to whole seconds; a negative span is written as 0.
func FormatHMS(d time.Duration) string {
	s := seconds(d)
	return fmt.Sprintf("%02d:%02d:%02d", s/3600, s/60%60, s%60)
}

// FormatDHMS writes a time span as "D-HH:MM:SS", rounded up to whole
// seconds; a negative span is written as 0.
func FormatDHMS(d time.Duration) string {
	s := seconds(d)
	return fmt.Sprintf("%d-%02d:%02d:%02d", s/86400, s/3600%24, s/60%60, s%60)
}

// seconds is d in whole seconds, rounded up, at least 0.
func seconds(d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	return int64((d + time.Second - 1) / time.Second)
}

// Human writes a time span the way people write limits: "48h", "1h30m",
// "2m", "90s" (time.Duration's form without its zero tails).
func Human(d time.Duration) string {
	s := d.Round(time.Second).String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// HumanMemory writes MiB in the largest unit that divides it exactly
// ("6G", "1536M", "2T"), for messages.
func HumanMemory(mib int64) string {
	switch {
	case mib > 0 && mib%(1024*1024) == 0:
		return strconv.FormatInt(mib/(1024*1024), 10) + "T"
	case mib > 0 && mib%1024 == 0:
		return strconv.FormatInt(mib/1024, 10) + "G"
	}
	return strconv.FormatInt(mib, 10) + "M"
}

// Ago says how long before now t was: "-" for the zero time, "12s ago",
// "5m ago", "7h ago" within 48 hours (recent), else "3d ago" with recent
// false; a t after now is "in 3s".
func Ago(t, now time.Time) (s string, recent bool) {
	if t.IsZero() {
		return "-", true
	}
	d := now.Sub(t).Round(time.Second)
	switch {
	case d < 0:
		return "in " + (-d).String(), true
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d.Seconds())), true
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d.Minutes())), true
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh ago", int(d.Hours())), true
	}
	return fmt.Sprintf("%dd ago", int(d.Hours()/24)), false
}
