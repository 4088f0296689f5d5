package policy

import (
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/rampart-sec/rampart/internal/ir"
)

// PortProto is a destination port and protocol.
type PortProto struct {
	Port     uint16
	Protocol ir.Protocol
}

func (p PortProto) String() string { return fmt.Sprintf("%d/%s", p.Port, p.Protocol) }

// ParsePorts parses "80/TCP,81/UDP,53" (protocol defaults to TCP).
func ParsePorts(s string) ([]PortProto, error) {
	var out []PortProto
	for _, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		num, proto, hasProto := strings.Cut(item, "/")
		p := PortProto{Protocol: ir.TCP}
		if hasProto {
			pr, err := ir.ParseProtocol(proto)
			if err != nil {
				return nil, fmt.Errorf("port %q: %w", item, err)
			}
			p.Protocol = pr
		}
		n, err := strconv.ParseUint(num, 10, 16)
		if err != nil || n == 0 {
			return nil, fmt.Errorf("port %q: want a number from 1 to 65535, optionally with /TCP, /UDP or /SCTP", item)
		}
		p.Port = uint16(n)
		out = append(out, p)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no ports in %q", s)
	}
	return out, nil
}

// Cell is one probe of the reachability matrix.
type Cell struct {
	From     string `json:"from"`
	To       string `json:"to"`
	Port     uint16 `json:"port"`
	Protocol string `json:"protocol"`
	Allowed  bool   `json:"allowed"`
}

// Matrix decides every ordered pair of distinct pods that have addresses, on ports (or, when
// ports is empty, on every port the destination pod declares). Cells are sorted by port,
// protocol, source and destination.
func (e *Evaluator) Matrix(ports []PortProto) []Cell {
	var cells []Cell
	pods := e.rs.Pods
	for i := range pods {
		from := &pods[i]
		if len(from.IPs) == 0 {
			continue
		}
		for j := range pods {
			to := &pods[j]
			if i == j || len(to.IPs) == 0 {
				continue
			}
			pp := ports
			if len(pp) == 0 {
				pp = DeclaredPorts(to)
			}
			for _, p := range pp {
				d := e.Verdict(Flow{Src: from.IP(), Dst: to.IP(), Protocol: p.Protocol, Port: p.Port})
				cells = append(cells, Cell{From: from.Key(), To: to.Key(), Port: p.Port, Protocol: p.Protocol.String(), Allowed: d.Allowed})
			}
		}
	}
	sort.SliceStable(cells, func(a, b int) bool {
		ca, cb := cells[a], cells[b]
		if ca.Port != cb.Port {
			return ca.Port < cb.Port
		}
		return ca.Protocol < cb.Protocol
	})
	return cells
}

// DeclaredPorts returns the distinct ports a pod declares, in declaration order.
func DeclaredPorts(p *ir.Pod) []PortProto {
	var out []PortProto
	seen := map[PortProto]bool{}
	for _, cp := range p.Ports {
		pp := PortProto{cp.Port, cp.Protocol}
		if !seen[pp] {
			seen[pp] = true
			out = append(out, pp)
		}
	}
	return out
}

type portKey struct {
	port  uint16
	proto string
}

// groupCells splits cells by port (in their order) into (from, to) -> allowed, and lists every
// pod named, sorted.
func groupCells(cells []Cell) ([]portKey, map[portKey]map[[2]string]bool, []string) {
	var order []portKey
	groups := map[portKey]map[[2]string]bool{}
	podSet := map[string]bool{}
	for _, c := range cells {
		k := portKey{c.Port, c.Protocol}
		if groups[k] == nil {
			groups[k] = map[[2]string]bool{}
			order = append(order, k)
		}
		groups[k][[2]string{c.From, c.To}] = c.Allowed
		podSet[c.From], podSet[c.To] = true, true
	}
	pods := make([]string, 0, len(podSet))
	for p := range podSet {
		pods = append(pods, p)
	}
	sort.Strings(pods)
	return order, groups, pods
}

// countAllowed counts the allowed cells of one port's grid.
func countAllowed(g map[[2]string]bool) int {
	n := 0
	for _, ok := range g {
		if ok {
			n++
		}
	}
	return n
}

// WriteTable prints one truth table per port: rows are sources, columns destinations, "."
// allowed, "X" denied, "-" not probed (a pod to itself, or a port the destination lacks).
func WriteTable(w io.Writer, cells []Cell) error {
	order, groups, pods := groupCells(cells)
	for gi, k := range order {
		if gi > 0 {
			fmt.Fprintln(w)
		}
		g := groups[k]
		fmt.Fprintf(w, "port %d/%s: %d of %d allowed (rows: from, columns: to; . allowed, X denied)\n", k.port, k.proto, countAllowed(g), len(g))
		tw := tabwriter.NewWriter(w, 0, 0, 1, ' ', 0)
		fmt.Fprint(tw, "\t")
		for _, to := range pods {
			fmt.Fprintf(tw, "%s\t", to)
		}
		fmt.Fprintln(tw)
		for _, from := range pods {
			fmt.Fprintf(tw, "%s\t", from)
			for _, to := range pods {
				mark := "-"
				if ok, probed := g[[2]string{from, to}]; probed {
					mark = map[bool]string{true: ".", false: "X"}[ok]
				}
				fmt.Fprintf(tw, "%s\t", mark)
			}
			fmt.Fprintln(tw)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	return nil
}
