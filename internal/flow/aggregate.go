package flow

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"time"

	"github.com/rampart-sec/rampart/internal/ir"
)

// Sink receives a dataplane's observations.
type Sink interface {
	Observe(Event)
	// Lost reports n events the dataplane could not deliver (its buffer was full).
	Lost(reason string, n uint64)
}

// Conn identifies an aggregated connection to the dataplane's connection tracking.
type Conn struct {
	Direction ir.Direction
	Tuple     Tuple
}

// ConnCounter is a dataplane that can read connections' packet and byte counts.
type ConnCounter interface {
	ConnCounts(conns []Conn) ([]Counts, error)
}

// ServiceFinder is a dataplane whose events cannot say which Service address a connection's
// client addressed, but whose connection tracking can, once the connection is tracked (the
// iptables dataplane: netfilter's NAT, followed through conntrack events), or whose
// connect-time balancer noted it before the first packet (the eBPF dataplane's socket hooks,
// for denied connections too).
type ServiceFinder interface {
	ServiceOf(c Conn) (netip.AddrPort, bool)
}

// serviceWait is how long a new allowed connection's first record may wait for its tracking
// to name its Service: conntrack reports a connection after the packet that logged it.
const serviceWait = 250 * time.Millisecond

// Config bounds the aggregator.
type Config struct {
	Node string
	// MaxConnections is how many connections are aggregated at once; events of further ones
	// are dropped (and counted) until some expire.
	MaxConnections int
	// Flush is how often new connections are published; Report how often a connection that
	// keeps changing is published again; Idle how long a connection may stay unchanged before
	// its last record is published and it is forgotten.
	Flush, Report, Idle time.Duration
}

// Defaults fills unset fields.
func (c *Config) Defaults() {
	if c.MaxConnections == 0 {
		c.MaxConnections = 16384
	}
	if c.Flush == 0 {
		c.Flush = time.Second
	}
	if c.Report == 0 {
		c.Report = 15 * time.Second
	}
	if c.Idle == 0 {
		c.Idle = 30 * time.Second
	}
}

// Validate reports every problem at once.
func (c *Config) Validate() error {
	var errs []error
	if c.MaxConnections < 0 {
		errs = append(errs, errors.New("flows: MaxConnections must not be negative"))
	}
	if c.Flush < 0 || c.Report < 0 || c.Idle < 0 {
		errs = append(errs, errors.New("flows: intervals must not be negative"))
	}
	return errors.Join(errs...)
}

type aggKey struct {
	dir     ir.Direction
	allowed bool
	tuple   Tuple
}

type entry struct {
	ev             Event // the first event: decider, service
	first, last    time.Time
	packets, bytes uint64
	flags          uint8
	published      bool
	pubPackets     uint64    // packets at the last publication
	pubTime        time.Time // when it was
	changed        time.Time
	gone, closing  bool
	nextCheck      time.Time // allowed: when the counts are read next
	prevCheck      time.Time // allowed: the previous read (or the first record)
	checked        bool      // allowed: counts were read for this tick
	firstCheck     bool      // allowed: the next read is the first
}

// Aggregator folds events into per-connection records and publishes them to a Log.
type Aggregator struct {
	cfg     Config
	log     *Log
	counter ConnCounter   // optional
	finder  ServiceFinder // optional: the counter, when it is one

	mu       sync.Mutex
	resolver *Resolver
	active   map[aggKey]*entry
	dropped  map[string]uint64
	// onEvent, if set, is called with every event (metrics), outside the lock.
	onEvent func(Event)
}

// NewAggregator returns an aggregator publishing to log.
func NewAggregator(cfg Config, log *Log, counter ConnCounter) (*Aggregator, error) {
	cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	finder, _ := counter.(ServiceFinder)
	return &Aggregator{cfg: cfg, log: log, counter: counter, finder: finder, active: map[aggKey]*entry{}, dropped: map[string]uint64{}}, nil
}

// SetResolver makes names come from the Ruleset now in force.
func (a *Aggregator) SetResolver(r *Resolver) {
	a.mu.Lock()
	a.resolver = r
	a.mu.Unlock()
}

// OnEvent registers fn to be called with every event observed (for metrics).
func (a *Aggregator) OnEvent(fn func(Event)) {
	a.mu.Lock()
	a.onEvent = fn
	a.mu.Unlock()
}

// Observe adds one event.
func (a *Aggregator) Observe(ev Event) {
	k := aggKey{ev.Direction, ev.Allowed, ev.Tuple}
	a.mu.Lock()
	fn := a.onEvent
	e, ok := a.active[k]
	switch {
	case ok:
		e.last = ev.Time
		e.packets++
		e.bytes += ev.Bytes
		e.flags |= ev.TCPFlags
		e.changed = ev.Time
	case len(a.active) >= a.cfg.MaxConnections:
		a.dropped["table_full"]++
	default:
		a.active[k] = &entry{ev: ev, first: ev.Time, last: ev.Time, packets: 1, bytes: ev.Bytes, flags: ev.TCPFlags, changed: ev.Time}
	}
	a.mu.Unlock()
	if fn != nil {
		fn(ev)
	}
}

// Lost counts events the dataplane dropped.
func (a *Aggregator) Lost(reason string, n uint64) {
	a.mu.Lock()
	a.dropped[reason] += n
	a.mu.Unlock()
}

// Dropped returns the events or records lost so far, by reason (the Log's included).
func (a *Aggregator) Dropped() map[string]uint64 {
	a.mu.Lock()
	out := make(map[string]uint64, len(a.dropped)+1)
	for k, v := range a.dropped {
		out[k] = v
	}
	a.mu.Unlock()
	for k, v := range a.log.Dropped() {
		out[k] += v
	}
	return out
}

// Active is how many connections are being aggregated.
func (a *Aggregator) Active() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.active)
}

// Run publishes on every Flush until ctx ends, then publishes what is left.
func (a *Aggregator) Run(ctx context.Context) {
	t := time.NewTicker(a.cfg.Flush)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			a.Tick(time.Now(), true)
			return
		case now := <-t.C:
			a.Tick(now, false)
		}
	}
}

// firstCheck is how long after its first record an allowed connection's counts are first
// read: short connections are over by then, and their last record frees their slot early.
const firstCheck = 2 * time.Second

// Tick publishes what is due at now: connections not published yet (with what their events
// say), denied ones that changed once their Report interval has passed and their last record
// once idle, and, for allowed ones, whose counts come from the dataplane's tracking (read
// firstCheck after the first record and then every Report interval, not at every tick), an
// update when they changed and a last record when they closed or went idle. With final,
// everything left is published.
func (a *Aggregator) Tick(now time.Time, final bool) {
	a.refreshCounts(now, final)
	a.mu.Lock()
	var out []Record
	for k, e := range a.active {
		var publish, drop bool
		switch {
		case !e.published:
			publish = true
			if !e.ev.Service.IsValid() && a.finder != nil {
				if svc, ok := a.finder.ServiceOf(Conn{k.dir, k.tuple}); ok {
					e.ev.Service = svc
				} else if k.allowed && !final && now.Sub(e.first) < serviceWait {
					continue // the next tick (a denied connection is never tracked)
				}
			}
		case final:
			publish, drop = e.packets != e.pubPackets, true
		case k.allowed:
			if !e.checked {
				continue // counts not read yet this round
			}
			e.checked = false
			// Over (gone, or TCP closing), or unchanged since the previous check: the last
			// record. A change at the first check is published at once: short connections
			// get their whole exchange in their second record.
			over := e.gone || e.closing || (k.tuple.Protocol == ir.TCP && e.flags&(FlagFIN|FlagRST) != 0)
			idle := !e.changed.After(e.prevCheck) || now.Sub(e.changed) >= a.cfg.Idle
			publish = e.packets != e.pubPackets && (over || idle || e.firstCheck || now.Sub(e.pubTime) >= a.cfg.Report)
			drop = over || idle
			e.firstCheck, e.prevCheck = false, now
		default: // denied: the events are the counts
			idle := now.Sub(e.changed) >= a.cfg.Idle
			publish = e.packets != e.pubPackets && (idle || now.Sub(e.pubTime) >= a.cfg.Report)
			drop = idle
		}
		if publish {
			out = append(out, a.recordLocked(e, now))
			if !e.published {
				e.nextCheck, e.firstCheck, e.prevCheck = now.Add(firstCheck), true, now
			}
			e.published, e.pubPackets, e.pubTime = true, e.packets, now
		}
		if drop || final {
			delete(a.active, k)
		}
	}
	a.mu.Unlock()
	for _, r := range out {
		a.log.Add(r)
	}
}

func (a *Aggregator) recordLocked(e *entry, now time.Time) Record {
	r := a.resolver.Record(a.cfg.Node, &e.ev)
	r.Time, r.FirstSeen, r.LastSeen = now, e.first, e.last
	r.Packets, r.Bytes = e.packets, e.bytes
	if e.ev.Tuple.Protocol == ir.TCP {
		r.TCPFlags = FlagString(e.flags)
	}
	return r
}

// refreshCounts reads the counts of the allowed connections whose check is due (all of them
// with final) from the dataplane's tracking, marking them checked.
func (a *Aggregator) refreshCounts(now time.Time, final bool) {
	a.mu.Lock()
	var keys []aggKey
	var conns []Conn
	for k, e := range a.active {
		if k.allowed && e.published && (final || !now.Before(e.nextCheck)) {
			keys = append(keys, k)
			conns = append(conns, Conn{k.dir, k.tuple})
			e.nextCheck = now.Add(a.cfg.Report)
			e.checked = true
		}
	}
	a.mu.Unlock()
	if len(conns) == 0 || a.counter == nil {
		return
	}
	counts, err := a.counter.ConnCounts(conns)
	if err != nil || len(counts) != len(conns) {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for i, k := range keys {
		e, ok := a.active[k]
		if !ok {
			continue
		}
		c := counts[i]
		if c.Gone {
			e.gone = true
			continue
		}
		e.closing = e.closing || c.Closed
		if c.Packets > e.packets {
			e.packets, e.changed, e.last = c.Packets, now, now
		}
		if c.Bytes > e.bytes {
			e.bytes = c.Bytes
		}
		e.flags |= c.TCPFlags
	}
}
