package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/tether-hpc/tether/backends"
	"github.com/tether-hpc/tether/monitor"
	"golang.org/x/term"
)

// progress shows a run's state on stderr: a bar redrawn in place on a
// terminal, plain lines (only when something changes) otherwise.
type progress struct {
	w     io.Writer
	tty   bool
	width int
	run   string
	last  string
	drawn bool
}

func newProgress(w io.Writer, run string) *progress {
	p := &progress{w: w, run: run, width: 80}
	if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		p.tty = true
		if cols, _, err := term.GetSize(int(f.Fd())); err == nil && cols > 20 {
			p.width = cols
		}
	}
	return p
}

func (p *progress) update(st monitor.Status) {
	o := st.Outcome
	state := o.Outcome
	if o.SchedulerState != "" {
		state = strings.ToLower(o.SchedulerState)
	}
	frac := ""
	if o.Fraction != nil {
		frac = fmt.Sprintf("%.0f%%", *o.Fraction*100)
	}
	line := fmt.Sprintf("run %s job %s: %s", p.run, o.JobID, state)
	if frac != "" {
		line += " " + frac
	}
	if o.Message != "" {
		line += " " + o.Message
	}
	if st.Job != nil && st.Job.State == backends.Pending {
		if st.Job.Reason != "" {
			line += " (" + st.Job.Reason + ")"
		}
		if o.ExpectedStart != nil {
			line += ", expected to start " + o.ExpectedStart.Local().Format(time.DateTime)
		}
	}
	if o.Stuck != "" {
		line += " (" + o.Stuck + ")"
	}
	if !p.tty {
		if line != p.last {
			fmt.Fprintf(p.w, "tether: %s\n", line)
			p.last = line
		}
		return
	}
	bar := ""
	if o.Fraction != nil {
		const n = 20
		filled := int(*o.Fraction * n)
		bar = "[" + strings.Repeat("=", filled) + strings.Repeat(" ", n-filled) + "] "
	}
	text := bar + line
	if r := []rune(text); len(r) > p.width-1 {
		text = string(r[:p.width-1])
	}
	if p.drawn && text == p.last {
		return
	}
	fmt.Fprintf(p.w, "\r\x1b[K%s", text)
	p.drawn, p.last = true, text
}

func (p *progress) clear() {
	if p.tty && p.drawn {
		fmt.Fprint(p.w, "\r\x1b[K")
		p.drawn = false
	}
}
