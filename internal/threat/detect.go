package threat

import (
	"fmt"
	"net/netip"
	"sort"
	"time"

	"github.com/rampart-sec/rampart/internal/flow"
	"github.com/rampart-sec/rampart/internal/ir"
	"github.com/rampart-sec/rampart/internal/model"
)

// prefixIndex maps prefixes to a value, looked up longest prefix first.
type prefixIndex map[int]map[netip.Prefix]int // by prefix length

// add maps p to v unless p is mapped already (the first feed listing an entry names it), and
// reports whether it did.
func (x prefixIndex) add(p netip.Prefix, v int) bool {
	m := x[p.Bits()]
	if m == nil {
		m = map[netip.Prefix]int{}
		x[p.Bits()] = m
	}
	if _, ok := m[p]; ok {
		return false
	}
	m[p] = v
	return true
}

func (x prefixIndex) lookup(a netip.Addr) (int, bool) {
	if len(x) == 0 || !a.Is4() {
		return 0, false
	}
	for bits := 32; bits >= 0; bits-- {
		m := x[bits]
		if m == nil {
			continue
		}
		p, _ := a.Prefix(bits)
		if v, ok := m[p]; ok {
			return v, true
		}
	}
	return 0, false
}

// feedLocked alerts on traffic from or to a listed address.
func (e *Engine) feedLocked(ev flow.Event, now time.Time) {
	src, dst := ev.Tuple.Src.Addr(), ev.Tuple.Dst.Addr()
	for _, listed := range []netip.Addr{src, dst} {
		fi, ok := e.feeds.idx.lookup(listed)
		if !ok {
			continue
		}
		f := e.feeds.feeds[fi]
		resp := model.ActionAlert
		if f.action == model.ActionBlock {
			resp = model.ActionBlock
			if e.cfg.Blocker == nil {
				resp = "block-unavailable"
			}
		}
		side := "from"
		if listed == dst {
			side = "to"
		}
		e.raiseLocked(fmt.Sprintf("feed/%s/%s/%s", f.name, src, dst), time.Minute, now, Alert{
			Type: TypeThreatFeed, Severity: "high", Feed: f.name,
			Source: e.partyLocked(src), Target: e.partyLocked(dst), Response: resp,
			Evidence: Evidence{Count: 1, Protocol: ev.Tuple.Protocol.String(), Ports: []uint16{ev.Tuple.Dst.Port()}, FirstSeen: now, LastSeen: now},
			Message:  fmt.Sprintf("traffic %s %s, listed by threat feed %s", side, listed, f.name),
		})
		return
	}
}

// honeypotLocked alerts on any attempt to reach a decoy.
func (e *Engine) honeypotLocked(ev flow.Event, d *decoy, now time.Time) {
	src, dst := ev.Tuple.Src.Addr(), ev.Tuple.Dst.Addr()
	resp := model.ActionAlert
	switch {
	case e.allowedLocked(src):
	case d.action == model.ActionBlock:
		resp = e.blockLocked(src, model.DefaultBlockFor, now)
	case d.action == model.ActionQuarantine:
		resp = e.quarantineLocked(src, model.DefaultBlockFor, now)
	}
	e.raiseLocked(fmt.Sprintf("decoy/%s/%s", src, dst), time.Minute, now, Alert{
		Type: TypeHoneypot, Severity: "high", Source: e.partyLocked(src), Target: e.partyLocked(dst), Response: resp,
		Evidence: Evidence{Count: 1, Protocol: ev.Tuple.Protocol.String(), Ports: []uint16{ev.Tuple.Dst.Port()}, FirstSeen: now, LastSeen: now},
		Message:  fmt.Sprintf("%s tried to reach the decoy %s/%s", describe(e.partyLocked(src)), d.pod.ns, d.pod.name),
	})
}

func describe(p Party) string {
	if p.Pod != "" {
		return fmt.Sprintf("pod %s/%s (%s)", p.Namespace, p.Pod, p.IP)
	}
	return p.IP
}

// scanKind names a first contact's kind by its protocol and TCP flags.
func scanKind(proto ir.Protocol, flags uint8) string {
	switch proto {
	case ir.UDP:
		return "udp"
	case ir.SCTP:
		return "sctp"
	}
	const fpu = flow.FlagFIN | flow.FlagPSH | flow.FlagURG
	switch {
	case flags&(flow.FlagSYN|flow.FlagACK) == flow.FlagSYN:
		return "tcp-syn"
	case flags == 0:
		return "tcp-null"
	case flags&^(flow.FlagECE|flow.FlagCWR) == fpu:
		return "tcp-xmas"
	case flags&^(flow.FlagECE|flow.FlagCWR) == flow.FlagFIN:
		return "tcp-fin"
	}
	return "tcp-other"
}

type portKey struct {
	proto ir.Protocol
	port  uint16
}

// scanKey is a source and a kind of first contact: each kind of scan is counted (and reported)
// on its own, so an XMAS scan after a SYN scan of the same target is a second alert.
type scanKey struct {
	src  netip.Addr
	kind string
}

// scanState is one source's first contacts of one kind in the window: by target, the ports it touched,
// and by port, the targets, each with when it was last seen.
type scanState struct {
	byHost map[netip.Addr]map[portKey]time.Time
	byPort map[portKey]map[netip.Addr]time.Time
	// What was reported, by target (vertical) and by port (horizontal).
	reportedV map[netip.Addr]report
	reportedH map[portKey]report
	first     time.Time
	last      time.Time
}

// maxContacts bounds one source's tracked contacts: beyond both thresholds, more add nothing.
const maxContacts = 1 << 14

func (e *Engine) scanLocked(ev flow.Event, cfg *model.PortScanDetector, now time.Time) {
	src, dst := ev.Tuple.Src.Addr(), ev.Tuple.Dst.Addr()
	kind := scanKind(ev.Tuple.Protocol, ev.TCPFlags)
	sk := scanKey{src, kind}
	s := e.scans[sk]
	if s == nil {
		if len(e.scans) >= e.cfg.MaxSources {
			e.untrack++
			return
		}
		s = &scanState{byHost: map[netip.Addr]map[portKey]time.Time{}, byPort: map[portKey]map[netip.Addr]time.Time{},
			reportedV: map[netip.Addr]report{}, reportedH: map[portKey]report{}, first: now}
		e.scans[sk] = s
	}
	k := portKey{ev.Tuple.Protocol, ev.Tuple.Dst.Port()}
	ports := s.byHost[dst]
	if ports == nil {
		ports = map[portKey]time.Time{}
		s.byHost[dst] = ports
	}
	hosts := s.byPort[k]
	if hosts == nil {
		hosts = map[netip.Addr]time.Time{}
		s.byPort[k] = hosts
	}
	if len(ports) < maxContacts {
		ports[k] = now
	}
	if len(hosts) < maxContacts {
		hosts[dst] = now
	}
	s.last = now
	e.checkVerticalLocked(sk, s, dst, cfg, now)
	e.checkHorizontalLocked(sk, s, k, cfg, now)
}

// A scan is reported when its count reaches the threshold, and again, as it goes on, each time
// the count has doubled since the last report and a second has passed (Tick looks again, so a
// scan that grew within the second is reported once it is over).
const rereport = time.Second

func due(count, threshold int, r report, now time.Time) bool {
	if r.count == 0 {
		return count >= threshold
	}
	return count >= 2*r.count && now.Sub(r.at) >= rereport
}

type report struct {
	count int
	at    time.Time
}

func (e *Engine) checkVerticalLocked(sk scanKey, s *scanState, dst netip.Addr, cfg *model.PortScanDetector, now time.Time) {
	ports := s.byHost[dst]
	if !due(len(ports), cfg.Ports, s.reportedV[dst], now) {
		return
	}
	s.reportedV[dst] = report{len(ports), now}
	var ps []uint16
	first, last := now, time.Time{}
	for pk, t := range ports {
		ps = append(ps, pk.port)
		first, last = minTime(first, t), maxTime(last, t)
	}
	sort.Slice(ps, func(i, j int) bool { return ps[i] < ps[j] })
	src := sk.src
	e.scanAlertLocked(cfg, src, sk.kind, e.partyLocked(dst), now, Evidence{Ports: ps, Count: len(ps), FirstSeen: first, LastSeen: last},
		fmt.Sprintf("vertical port scan: %s probed %d ports of %s within %s", describe(e.partyLocked(src)), len(ps), describe(e.partyLocked(dst)), cfg.Window.Duration))
}

func (e *Engine) checkHorizontalLocked(sk scanKey, s *scanState, k portKey, cfg *model.PortScanDetector, now time.Time) {
	hosts := s.byPort[k]
	if !due(len(hosts), cfg.Hosts, s.reportedH[k], now) {
		return
	}
	s.reportedH[k] = report{len(hosts), now}
	first, last := now, time.Time{}
	addrs := make([]netip.Addr, 0, len(hosts))
	for a, t := range hosts {
		addrs = append(addrs, a)
		first, last = minTime(first, t), maxTime(last, t)
	}
	sort.Slice(addrs, func(i, j int) bool { return addrs[i].Less(addrs[j]) })
	hs := make([]string, len(addrs))
	for i, a := range addrs {
		hs[i] = a.String()
	}
	e.scanAlertLocked(cfg, sk.src, sk.kind, Party{}, now, Evidence{Ports: []uint16{k.port}, Hosts: hs, Count: len(hs), Protocol: k.proto.String(), FirstSeen: first, LastSeen: last},
		fmt.Sprintf("horizontal port scan: %s probed %s port %d on %d addresses within %s", describe(e.partyLocked(sk.src)), k.proto, k.port, len(hs), cfg.Window.Duration))
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

func (e *Engine) scanAlertLocked(cfg *model.PortScanDetector, src netip.Addr, kind string, target Party, now time.Time, ev Evidence, msg string) {
	ev.Scan = kind
	resp := model.ActionAlert
	switch cfg.Action {
	case model.ActionBlock:
		resp = e.blockLocked(src, cfg.BlockFor.Duration, now)
	case model.ActionQuarantine:
		resp = e.quarantineLocked(src, cfg.BlockFor.Duration, now)
	}
	e.raiseLocked("", 0, now, Alert{Type: TypePortScan, Severity: "medium", Source: e.partyLocked(src), Target: target, Evidence: ev, Response: resp, Message: msg})
}

// scanExpireLocked forgets first contacts older than their window, and reports scans that grew
// since their last report.
func (e *Engine) scanExpireLocked(now time.Time) {
	for sk, s := range e.scans {
		for dst := range s.reportedV {
			if cfg := e.portScanCfg(dst); cfg != nil {
				e.checkVerticalLocked(sk, s, dst, cfg, now)
			}
		}
		for k := range s.reportedH {
			for dst := range s.byPort[k] {
				if cfg := e.portScanCfg(dst); cfg != nil {
					e.checkHorizontalLocked(sk, s, k, cfg, now)
				}
				break
			}
		}
		for dst, ports := range s.byHost {
			cfg := e.portScanCfg(dst)
			if cfg == nil {
				delete(s.byHost, dst)
				continue
			}
			for k, t := range ports {
				if now.Sub(t) > cfg.Window.Duration {
					delete(ports, k)
					if hosts := s.byPort[k]; hosts != nil {
						delete(hosts, dst)
						if len(hosts) == 0 {
							delete(s.byPort, k)
							delete(s.reportedH, k)
						}
					}
				}
			}
			if len(ports) == 0 {
				delete(s.byHost, dst)
				delete(s.reportedV, dst)
			}
		}
		if len(s.byHost) == 0 {
			delete(e.scans, sk)
		}
	}
}

// floodState is one local target's new TCP connection attempts in the current interval, and
// the rate learned for it.
type floodState struct {
	since       time.Time
	count       int
	sources     map[netip.Addr]int
	limited     int     // attempts a SYN limit dropped (a sample: the dataplanes report a few)
	baseline    float64 // attempts per second, learned from intervals that were no flood
	learned     int     // intervals learned from
	first, last time.Time
}

// Learning: each interval that is no flood moves the baseline by this fraction of the difference.
const learnRate = 0.1

func (e *Engine) floodTickLocked(now time.Time) {
	for dst, f := range e.floods {
		dt := now.Sub(f.since).Seconds()
		if dt < 1 {
			continue
		}
		cfg := e.synFloodCfg(dst)
		rate := float64(f.count) / dt
		if cfg != nil {
			threshold := max(float64(cfg.MinRate), cfg.Sensitivity*f.baseline)
			switch {
			case rate >= threshold && f.count > 0:
				e.floodAlertLocked(dst, cfg, f, rate, now)
			case f.limited > 0:
				// Held down by its limit, the flood goes on: keep the limit, learn nothing.
				e.extendLimitLocked(dst, cfg, now)
			default:
				f.baseline += learnRate * (rate - f.baseline)
				f.learned++
			}
		}
		f.since, f.count, f.limited, f.sources, f.first = now, 0, 0, map[netip.Addr]int{}, time.Time{}
		if cfg == nil || (rate == 0 && f.baseline < 0.01) {
			delete(e.floods, dst)
		}
	}
}

func (e *Engine) floodAlertLocked(dst netip.Addr, cfg *model.SynFloodDetector, f *floodState, rate float64, now time.Time) {
	type src struct {
		a netip.Addr
		n int
	}
	var srcs []src
	for a, n := range f.sources {
		srcs = append(srcs, src{a, n})
	}
	sort.Slice(srcs, func(i, j int) bool {
		return srcs[i].n > srcs[j].n || (srcs[i].n == srcs[j].n && srcs[i].a.Less(srcs[j].a))
	})
	var source Party
	var hosts []string
	for i, s := range srcs {
		if i < 16 {
			hosts = append(hosts, s.a.String())
		}
	}
	if len(srcs) > 0 {
		source = e.partyLocked(srcs[0].a)
	}
	key := "flood/" + dst.String()
	e.extendLimitLocked(dst, cfg, now)
	if until, ok := e.quiet[key]; ok && now.Before(until) {
		return
	}
	resp := model.ActionAlert
	switch cfg.Action {
	case model.ActionBlock:
		// The sources that sent at least a tenth of the attempts: the flood's, not a bystander's.
		resp = ""
		for _, s := range srcs {
			if s.n*10 >= f.count && !e.allowedLocked(s.a) {
				resp = e.blockLocked(s.a, cfg.BlockFor.Duration, now)
			}
		}
		if resp == "" {
			resp = model.ActionAlert
		}
	case model.ActionRateLimit:
		resp = e.limitLocked(dst, cfg, now)
	}
	target := e.partyLocked(dst)
	e.raiseLocked(key, time.Minute, now, Alert{
		Type: TypeSynFlood, Severity: "high", Source: source, Target: target, Response: resp,
		Evidence: Evidence{Count: f.count, Rate: rate, Baseline: f.baseline, Hosts: hosts, Protocol: "TCP", FirstSeen: f.first, LastSeen: f.last},
		Message:  fmt.Sprintf("SYN flood: %s receives %.0f new TCP connection attempts per second (learned rate %.1f/s) from %d sources", describe(target), rate, f.baseline, len(srcs)),
	})
}
