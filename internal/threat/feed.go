package threat

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

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

// LoadFeed reads a feed's file, or fetches its URL.
func LoadFeed(f *model.Feed) ([]netip.Prefix, int, error) {
	if f.URL != "" {
		return newFetcher().load(f)
	}
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

// Limits of a feed fetched by URL: a list larger than maxFeedBytes is refused rather than
// truncated (a truncated list would silently unblock its tail).
const (
	maxFeedBytes = 64 << 20
	fetchTimeout = 30 * time.Second
)

// fetcher reads feeds by URL, asking the server whether a list changed since it was last read
// (ETag, Last-Modified): an unchanged list is not downloaded or parsed again.
type fetcher struct {
	client *http.Client
	mu     sync.Mutex
	seen   map[string]fetched // by URL
}

type fetched struct {
	etag, modified string
	format         string
	prefixes       []netip.Prefix
	v6             int
}

func newFetcher() *fetcher {
	return &fetcher{client: &http.Client{Timeout: fetchTimeout}, seen: map[string]fetched{}}
}

// load reads a feed from its file or URL.
func (fe *fetcher) load(f *model.Feed) ([]netip.Prefix, int, error) {
	if f.URL == "" {
		return LoadFeed(f)
	}
	ps, v6, err := fe.fetch(f)
	if err != nil {
		return nil, 0, fmt.Errorf("feed %s (%s): %w", f.Name, f.URL, err)
	}
	return ps, v6, nil
}

// last is what was last fetched from f's URL in f's format (nil: nothing yet).
func (fe *fetcher) last(f *model.Feed) []netip.Prefix {
	fe.mu.Lock()
	defer fe.mu.Unlock()
	if prev, ok := fe.seen[f.URL]; ok && prev.format == f.Format {
		return prev.prefixes
	}
	return nil
}

func (fe *fetcher) fetch(f *model.Feed) ([]netip.Prefix, int, error) {
	fe.mu.Lock()
	prev, ok := fe.seen[f.URL]
	fe.mu.Unlock()
	if ok && prev.format != f.Format {
		ok = false // parsed another way before
	}
	req, err := http.NewRequest(http.MethodGet, f.URL, nil)
	if err != nil {
		return nil, 0, err
	}
	req.Header.Set("User-Agent", "rampart-agent")
	if ok && prev.etag != "" {
		req.Header.Set("If-None-Match", prev.etag)
	}
	if ok && prev.modified != "" {
		req.Header.Set("If-Modified-Since", prev.modified)
	}
	resp, err := fe.client.Do(req)
	if err != nil {
		return nil, 0, err
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusNotModified && ok:
		return prev.prefixes, prev.v6, nil
	case resp.StatusCode != http.StatusOK:
		return nil, 0, fmt.Errorf("%s", resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxFeedBytes+1))
	if err != nil {
		return nil, 0, err
	}
	if len(body) > maxFeedBytes {
		return nil, 0, fmt.Errorf("larger than %d MiB: refused, not truncated", maxFeedBytes>>20)
	}
	ps, v6, err := ParseFeed(bytes.NewReader(body), f.Format)
	if err != nil {
		return nil, 0, err
	}
	fe.mu.Lock()
	fe.seen[f.URL] = fetched{etag: resp.Header.Get("ETag"), modified: resp.Header.Get("Last-Modified"), format: f.Format, prefixes: ps, v6: v6}
	fe.mu.Unlock()
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

// ProtectedOf are the ranges of c no feed may block: the nodes' pod ranges and addresses, and
// every Service's cluster IPs.
func ProtectedOf(c *model.Cluster) Protected {
	var p Protected
	for _, n := range c.Nodes {
		for _, s := range append([]string{n.Spec.PodCIDR}, n.Spec.PodCIDRs...) {
			if pfx, err := netip.ParsePrefix(s); err == nil {
				p.Ranges = append(p.Ranges, pfx.Masked())
			}
		}
		for _, a := range n.Status.Addresses {
			if ip, err := netip.ParseAddr(a.Address); err == nil {
				p.Nodes = append(p.Nodes, ip)
			}
		}
	}
	for _, s := range c.Services {
		for _, ip := range append([]string{s.Spec.ClusterIP}, s.Spec.ClusterIPs...) {
			if a, err := netip.ParseAddr(ip); err == nil {
				p.Ranges = append(p.Ranges, netip.PrefixFrom(a, a.BitLen()))
			}
		}
	}
	return p
}
