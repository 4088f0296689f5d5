package model

import (
	"fmt"
	"strings"
)

// Error is one problem with one object, located precisely enough for a user to fix it.
type Error struct {
	File  string // path, "-" for stdin, or "" when not from a file
	Doc   int    // 1-based document index within the file; 0 when unknown
	Kind  string
	Ref   string // namespace/name or name
	Field string // field path such as spec.ingress[0].from[1].ipBlock.cidr
	Msg   string
}

func (e *Error) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File)
		if e.Doc > 0 {
			fmt.Fprintf(&b, " (document %d)", e.Doc)
		}
		b.WriteString(": ")
	}
	if e.Kind != "" {
		b.WriteString(e.Kind)
		if e.Ref != "" {
			b.WriteString(" " + e.Ref)
		}
		b.WriteString(": ")
	}
	if e.Field != "" {
		b.WriteString(e.Field + ": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Errors is every problem found in one load or apply; it is returned whole so users can fix
// everything in one pass.
type Errors []*Error

func (es Errors) Error() string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}
