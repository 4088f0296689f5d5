package policy

import (
	"fmt"
	"io"
	"strings"
)

// WriteExplanation prints a decision for humans: the verdict, then each side with the rule that
// decided it and every rule considered on the way.
func WriteExplanation(w io.Writer, d Decision) {
	verdict := "ALLOWED"
	if !d.Allowed {
		verdict = "DENIED"
	}
	fmt.Fprintf(w, "%s: %s -> %s on %d/%s\n", verdict, d.Src.Describe(), d.Dst.Describe(), d.Flow.Port, d.Flow.Protocol)
	if !d.Allowed {
		var sides []string
		if !d.Egress.Allowed {
			sides = append(sides, "egress")
		}
		if !d.Ingress.Allowed {
			sides = append(sides, "ingress")
		}
		fmt.Fprintf(w, "(denied on %s; a flow needs both egress and ingress to allow it)\n", strings.Join(sides, " and "))
	}
	for _, s := range []Side{d.Egress, d.Ingress} {
		fmt.Fprintln(w)
		who := "source"
		if s.Subject != "" {
			who = s.Subject
		} else if s.Direction.String() == "ingress" {
			who = "destination"
		}
		fmt.Fprintf(w, "%s of %s: %s\n", titleCase(s.Direction.String()), who, map[bool]string{true: "allowed", false: "denied"}[s.Allowed])
		fmt.Fprintf(w, "  because %s\n", s.Reason)
		if len(s.Trace) > 0 {
			fmt.Fprintln(w, "  rules considered, in order:")
			for _, st := range s.Trace {
				mark := "no match"
				if st.Matched {
					mark = "MATCH"
				}
				rule := "(policy)"
				if st.Rule >= 0 {
					rule = fmt.Sprintf("rule %d", st.Rule)
					if st.RuleName != "" {
						rule += fmt.Sprintf(" %q", st.RuleName)
					}
					rule += " [" + st.Action + "]"
				}
				fmt.Fprintf(w, "    - %s %s: %s: %s\n", st.Policy, rule, mark, st.Detail)
			}
		}
	}
}

func titleCase(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}
