package units

import (
	"testing"
	"time"
)

// FuzzParseDuration: any input gives a span or an error, never a panic; an
// accepted span is not negative, and what FormatHMS, FormatDHMS and Go
// write of it reads back the same (to the second for the colon forms).
func FuzzParseDuration(f *testing.F) {
	for _, s := range []string{"90s", "1h30m", "7d", "1d12h", "30", "05:30", "02:00:00", "2-00", "1-02:03", "1-12:00:00", "-5m", "1d-1s", "99999999999:00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := ParseDuration(s)
		if err != nil {
			return
		}
		if d < 0 {
			t.Fatalf("ParseDuration(%q) = %v, negative", s, d)
		}
		if back, err := ParseDuration(d.String()); err != nil || back != d {
			t.Fatalf("ParseDuration(%q) = %v; %q reads back as %v, %v", s, d, d.String(), back, err)
		}
		whole := (d + time.Second - 1) / time.Second * time.Second
		if whole > 100*365*24*time.Hour {
			return // beyond the colon forms' range
		}
		for _, form := range []string{FormatHMS(d), FormatDHMS(d)} {
			if back, err := ParseDuration(form); err != nil || back != whole {
				t.Fatalf("ParseDuration(%q) = %v; %q reads back as %v, %v, want %v", s, d, form, back, err, whole)
			}
		}
	})
}

// FuzzParseMemory: any input gives an amount or an error, never a panic;
// an accepted amount is not negative and FormatMemory's form reads back.
func FuzzParseMemory(f *testing.F) {
	for _, s := range []string{"512M", "16G", "4GiB", "4gb", "1T", "2048", "1.5G", "1024K", "-1G", "NaN", "1e12T"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		m, err := ParseMemory(s)
		if err != nil {
			return
		}
		if m < 0 {
			t.Fatalf("ParseMemory(%q) = %d, negative", s, m)
		}
		if back, err := ParseMemory(FormatMemory(m)); err != nil || back != m {
			t.Fatalf("ParseMemory(%q) = %d; %q reads back as %d, %v", s, m, FormatMemory(m), back, err)
		}
	})
}
