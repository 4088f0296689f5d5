package threat

import (
	"bufio"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strings"

	"github.com/rampart-sec/rampart/internal/model"
)

// ParseFeed reads a threat feed: netset (one IPv4 address or CIDR per line, '#' comments, as
// FireHOL's lists) or spamhaus (DROP lists: "CIDR ; SBLnnn", ';' comments). Addresses are
// returned as prefixes (a /32 for a single address), masked. IPv6 entries are skipped and
// counted (the dataplanes are IPv4 only); a malformed line is an error naming its line.
func ParseFeed(r io.Reader, format string) (prefixes []netip.Prefix, skippedV6 int, err error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	comment := "#"
	if format == model.FormatSpamhaus {
		comment = ";"
	}
	for line := 1; sc.Scan(); line++ {
		s := sc.Text()
		if i := strings.Index(s, comment); i >= 0 {
			s = s[:i]
		}
		if format == model.FormatNetset {
			if i := strings.IndexAny(s, " \t"); i >= 0 { // some netsets carry a note after the entry
				s = s[:i]
			}
		}
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		p, err := parsePrefix(s)
		if err != nil {
			return nil, 0, fmt.Errorf("line %d: %q is not an IP address or CIDR", line, s)
		}
		if !p.Addr().Is4() {
			skippedV6++
			continue
		}
		prefixes = append(prefixes, p)
	}
	if err := sc.Err(); err != nil {
		return nil, 0, err
	}
	return prefixes, skippedV6, nil
}

func parsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, err
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// LoadFeed reads a feed's file.
func LoadFeed(f *model.Feed) ([]netip.Prefix, int, error) {
	fh, err := os.Open(f.File)
	if err != nil {
		return nil, 0, fmt.Errorf("feed %s: %w", f.Name, err)
	}
	defer fh.Close()
	ps, v6, err := ParseFeed(fh, f.Format)
	if err != nil {
		return nil, 0, fmt.Errorf("feed %s (%s): %w", f.Name, f.File, err)
	}
	return ps, v6, nil
}

// Refused is a feed entry that would cut the cluster off, and why.
type Refused struct {
	Prefix netip.Prefix
	Why    string
}

// Protected are the ranges no feed may block wholesale: the pod and Service ranges and the
// node addresses (and, always, the whole address space).
type Protected struct {
	Ranges []netip.Prefix // pod CIDRs, the Service range
	Nodes  []netip.Addr
}

// Filter drops entries that cover a protected range or a node address: blocking them would cut
// the cluster off. An entry inside a range (one pod's address) stays: that is a block of one pod.
func (p Protected) Filter(in []netip.Prefix) (keep []netip.Prefix, refused []Refused) {
	keep = in[:0:0]
	for _, e := range in {
		why := ""
		if e.Bits() == 0 {
			why = "the whole address space"
		}
		for _, r := range p.Ranges {
			if why == "" && e.Bits() <= r.Bits() && e.Contains(r.Addr()) {
				why = "covers the cluster range " + r.String()
			}
		}
		for _, n := range p.Nodes {
			if why == "" && e.Contains(n) {
				why = "covers the node address " + n.String()
			}
		}
		if why != "" {
			refused = append(refused, Refused{e, why})
			continue
		}
		keep = append(keep, e)
	}
	return keep, refused
}
