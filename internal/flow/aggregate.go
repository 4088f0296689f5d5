package flow

import (
	"context"
	"errors"
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
	ev                  Event // the first event: decider, service
	first, last         time.Time
	packets, bytes      uint64
	flags               uint8
	published           bool
	pubPackets, pubTime uint64 // packets at the last publication; unix nanos of it
	changed             time.Time
	gone                bool
}

// Aggregator folds events into per-connection records and publishes them to a Log.
type Aggregator struct {
	cfg     Config
	log     *Log
	counter ConnCounter // optional

	mu       sync.Mutex
	resolver *Resolver
	active   map[aggKey]*entry
	dropped  map[string]uint64
	observed uint64
	// OnVerdict, if set, is called for every event (metrics), under no lock of the caller's.
	onEvent func(Event)
}

// NewAggregator returns an aggregator publishing to log.
func NewAggregator(cfg Config, log *Log, counter ConnCounter) (*Aggregator, error) {
	cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Aggregator{cfg: cfg, log: log, counter: counter, active: map[aggKey]*entry{}, dropped: map[string]uint64{}}, nil
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
	a.observed++
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

// Tick publishes what is due at now: connections not published yet, changed ones whose
// Report interval has passed, and the last record of those idle (or closed); all of them when
// final is set.
func (a *Aggregator) Tick(now time.Time, final bool) {
	a.refreshCounts(now)
	a.mu.Lock()
	var out []Record
	for k, e := range a.active {
		idle := e.gone || now.Sub(e.changed) >= a.cfg.Idle
		due := !e.published || (e.packets != e.pubPackets && now.Sub(time.Unix(0, int64(e.pubTime))) >= a.cfg.Report)
		if due || ((idle || final) && e.packets != e.pubPackets) {
			out = append(out, a.recordLocked(e, now))
			e.published, e.pubPackets, e.pubTime = true, e.packets, uint64(now.UnixNano())
		}
		if idle || final {
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

// refreshCounts reads the allowed connections' counts from the dataplane's tracking.
func (a *Aggregator) refreshCounts(now time.Time) {
	if a.counter == nil {
		return
	}
	a.mu.Lock()
	var keys []aggKey
	var conns []Conn
	for k := range a.active {
		if k.allowed {
			keys = append(keys, k)
			conns = append(conns, Conn{k.dir, k.tuple})
		}
	}
	a.mu.Unlock()
	if len(conns) == 0 {
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
		if c.Packets > e.packets {
			e.packets, e.changed, e.last = c.Packets, now, now
		}
		if c.Bytes > e.bytes {
			e.bytes = c.Bytes
		}
		e.flags |= c.TCPFlags
	}
}
