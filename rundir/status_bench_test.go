package rundir

import (
	"bufio"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// writeStatusFile writes about size bytes of status lines, as a Task that
// reports in a tight loop would: heartbeats, progress with a message of
// msg bytes, and now and then a result.
func writeStatusFile(b *testing.B, path string, size int, msg int) {
	b.Helper()
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	w := bufio.NewWriterSize(f, 1<<20)
	ts := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	text := strings.Repeat("m", msg)
	n := 0
	for i := 0; n < size; i++ {
		var line string
		at := ts.Add(time.Duration(i) * time.Millisecond).Format(time.RFC3339Nano)
		switch i % 10 {
		case 9:
			line = `{"v":1,"ts":"` + at + `","type":"result","attempt":1,"results":{"rows":"` + at + `"}}`
		case 0, 3, 6:
			line = `{"v":1,"ts":"` + at + `","type":"progress","attempt":1,"host":"node001","fraction":0.5,"message":"` + text + `"}`
		default:
			line = `{"v":1,"ts":"` + at + `","type":"heartbeat","attempt":1,"rank":0,"host":"node001"}`
		}
		w.WriteString(line)
		w.WriteByte('\n')
		n += len(line) + 1
	}
	if err := w.Flush(); err != nil {
		b.Fatal(err)
	}
	f.Close()
}

// BenchmarkStatusReader: throughput of reading a whole status file (a
// monitor restarted on a run that logged in a tight loop), in MB/s; B/op
// shows what one read allocates. Target: > 20 MB/s on short lines, with
// allocations independent of the file's size (bounded chunks).
func BenchmarkStatusReader(b *testing.B) {
	for _, c := range []struct {
		name string
		msg  int
	}{{"short-lines", 20}, {"1KiB-messages", 1024}} {
		b.Run(c.name, func(b *testing.B) {
			p := filepath.Join(b.TempDir(), "status.jsonl")
			const size = 8 << 20
			writeStatusFile(b, p, size, c.msg)
			fi, _ := os.Stat(p)
			b.SetBytes(fi.Size())
			b.ReportAllocs()
			for b.Loop() {
				r := StatusReader{Path: p, FromAttempt: 1}
				if _, err := r.Update(); err != nil {
					b.Fatal(err)
				}
				if r.Summary.Bad != 0 || r.Summary.Events == 0 {
					b.Fatalf("bad=%d events=%d", r.Summary.Bad, r.Summary.Events)
				}
			}
		})
	}
}
