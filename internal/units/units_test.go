package units

import (
	"testing"
	"time"
)

func TestParseDuration(t *testing.T) {
	ok := map[string]time.Duration{
		"90s": 90 * time.Second, "1h30m": 90 * time.Minute, "7d": 7 * 24 * time.Hour,
		"1d12h": 36 * time.Hour, "30": 30 * time.Minute, "05:30": 5*time.Minute + 30*time.Second,
		"01:02:03": time.Hour + 2*time.Minute + 3*time.Second, "2-00": 48 * time.Hour,
		"1-02:03": 26*time.Hour + 3*time.Minute, "1-00:00:10": 24*time.Hour + 10*time.Second, "0s": 0,
	}
	for in, want := range ok {
		got, err := ParseDuration(in)
		if err != nil || got != want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "-5m", "abc", "1:2:3:4", "1-2-3", "x-01", "10 minutes", "5d-3h", "1d-1s"} {
		if d, err := ParseDuration(in); err == nil {
			t.Errorf("ParseDuration(%q) = %v, want an error", in, d)
		}
	}
}

func TestParseMemory(t *testing.T) {
	ok := map[string]int64{"512M": 512, "4G": 4096, "4GiB": 4096, "4gb": 4096, "1T": 1 << 20, "2048": 2048, "1.5G": 1536, "1024K": 1}
	for in, want := range ok {
		got, err := ParseMemory(in)
		if err != nil || got != want {
			t.Errorf("ParseMemory(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "-1G", "lots", "4X", "NaN", "Inf"} {
		if m, err := ParseMemory(in); err == nil {
			t.Errorf("ParseMemory(%q) = %v, want an error", in, m)
		}
	}
}

func TestLimits(t *testing.T) {
	for in, want := range map[string]time.Duration{"1:00:00": time.Hour, "2:00": 2 * time.Minute, "1-00:00:00": 24 * time.Hour,
		"02:00:00": 2 * time.Hour, "1-12:00:00": 36 * time.Hour, "90m": 90 * time.Minute, "UNLIMITED": 0, "N/A": 0, "": 0} {
		if got := ParseLimit(in); got != want {
			t.Errorf("ParseLimit(%q) = %v, want %v", in, got, want)
		}
	}
	for d, want := range map[time.Duration]string{0: "00:00:00", -time.Second: "00:00:00", 1500 * time.Millisecond: "00:00:02",
		90 * time.Minute: "01:30:00", 100*time.Hour + 5*time.Second: "100:00:05"} {
		if got := FormatHMS(d); got != want {
			t.Errorf("FormatHMS(%v) = %q, want %q", d, got, want)
		}
	}
	for d, want := range map[time.Duration]string{0: "0-00:00:00", 90 * time.Second: "0-00:01:30", 36*time.Hour + time.Nanosecond: "1-12:00:01"} {
		if got := FormatDHMS(d); got != want {
			t.Errorf("FormatDHMS(%v) = %q, want %q", d, got, want)
		}
	}
	if got := FormatMemory(16384); got != "16384M" {
		t.Errorf("FormatMemory = %q", got)
	}
}

func TestHuman(t *testing.T) {
	for d, want := range map[time.Duration]string{
		48 * time.Hour: "48h", 90 * time.Minute: "1h30m", 2 * time.Minute: "2m", 90 * time.Second: "1m30s",
		45 * time.Second: "45s", time.Hour + time.Second: "1h0m1s",
	} {
		if got := Human(d); got != want {
			t.Errorf("Human(%v) = %q, want %q", d, got, want)
		}
	}
}

func TestHumanMemory(t *testing.T) {
	for mib, want := range map[int64]string{6144: "6G", 1536: "1536M", 2 * 1024 * 1024: "2T", 0: "0M", 100: "100M"} {
		if got := HumanMemory(mib); got != want {
			t.Errorf("HumanMemory(%d) = %q, want %q", mib, got, want)
		}
	}
}
