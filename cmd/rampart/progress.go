package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

// progress draws a one-line bar on stderr while a long job runs, only when stderr is a
// terminal: logs and pipes get no control characters.
type progress struct {
	w     io.Writer
	label string
	last  time.Time
	drawn bool
}

func newProgress(label string) *progress {
	fi, err := os.Stderr.Stat()
	if err != nil || fi.Mode()&os.ModeCharDevice == 0 || os.Getenv("TERM") == "dumb" {
		return &progress{}
	}
	return &progress{w: os.Stderr, label: label}
}

// Update redraws the bar at most ten times a second, and always at the end.
func (p *progress) Update(done, total int) {
	if p.w == nil || total <= 0 {
		return
	}
	if done < total && time.Since(p.last) < 100*time.Millisecond {
		return
	}
	p.last = time.Now()
	const width = 30
	n := done * width / total
	fmt.Fprintf(p.w, "\r%s [%s%s] %d/%d", p.label, strings.Repeat("=", n), strings.Repeat(" ", width-n), done, total)
	p.drawn = true
}

// Done clears the bar.
func (p *progress) Done() {
	if p.w != nil && p.drawn {
		fmt.Fprintf(p.w, "\r\033[K")
	}
}
