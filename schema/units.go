package schema

import (
	"time"

	"github.com/tether-hpc/tether/internal/units"
)

// Duration is a time span written in TOML as a string: a Go duration
// ("90s", "1h30m"), days ("7d", "1d12h") or a Slurm-style time ("MM", "MM:SS", "HH:MM:SS",
// "D-HH", "D-HH:MM", "D-HH:MM:SS").
type Duration time.Duration

// D returns the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// UnmarshalText parses a duration string.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := units.ParseDuration(string(b))
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

// ParseDuration accepts Go durations, days and Slurm time formats (see
// Duration).
func ParseDuration(s string) (time.Duration, error) { return units.ParseDuration(s) }

// Memory is an amount of memory in MiB, written in TOML as a string with a
// unit: "512M", "4G", "4GiB", "1T". A bare number means MiB, like sbatch.
type Memory int64

// MiB returns the amount in mebibytes.
func (m Memory) MiB() int64 { return int64(m) }

// UnmarshalText parses a memory string.
func (m *Memory) UnmarshalText(b []byte) error {
	v, err := units.ParseMemory(string(b))
	if err != nil {
		return err
	}
	*m = Memory(v)
	return nil
}

// MarshalText writes the amount as "<n>M".
func (m Memory) MarshalText() ([]byte, error) {
	return []byte(units.FormatMemory(int64(m))), nil
}

// ParseMemory parses "4G", "512M", "4GiB", "1T", "2048" (MiB) into MiB.
func ParseMemory(s string) (int64, error) { return units.ParseMemory(s) }
