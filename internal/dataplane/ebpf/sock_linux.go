package ebpf

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/features"
	"github.com/cilium/ebpf/link"

	"github.com/rampart-sec/rampart/internal/ir"
)

// SockLB is connect-time Service load balancing: programs in a cgroup's socket hooks (connect4,
// sendmsg4, recvmsg4, getpeername4) send the sockets created in that cgroup (and below it)
// straight to a backend, and a sockops program notes the frontend of each translated TCP
// connection (Frontend) for flow records. Traffic from sockets outside it is left to the per-packet DNAT of the
// veth programs.
//
// A Service's backends change atomically: the new list is written under a fresh id, then the
// frontend entry is switched to it in one map update, then the old list is deleted.
type SockLB struct {
	mu      sync.Mutex
	objs    sockObjects
	links   []link.Link
	current map[sockLbSvcKey]lbEntry
	nextID  uint32
}

type lbEntry struct {
	id       uint32
	affinity uint32
	backends []sockLbBackendValue
}

// NewSockLB loads the programs and attaches them to the cgroup (v2) directory at cgroupPath.
// The links belong to this process: they go when Close is called or the process exits.
func NewSockLB(cgroupPath string, sizes MapSizes) (*SockLB, error) {
	s := &SockLB{current: map[sockLbSvcKey]lbEntry{}}
	spec, err := loadSock()
	if err != nil {
		return nil, fmt.Errorf("load connect-time load balancer: %w", err)
	}
	sizes.apply(collSpec{spec})
	if features.HaveProgramHelper(ebpf.CGroupSockAddr, asm.FnSetRetval) == nil {
		if err := spec.Variables["refuse_with_errno"].Set(uint8(1)); err != nil {
			return nil, fmt.Errorf("load connect-time load balancer: %w", err)
		}
	}
	if err := spec.LoadAndAssign(&s.objs, nil); err != nil {
		return nil, fmt.Errorf("load connect-time load balancer: %w", err)
	}
	for _, a := range []struct {
		prog *ebpf.Program
		at   ebpf.AttachType
	}{
		{s.objs.LbConnect4, ebpf.AttachCGroupInet4Connect},
		{s.objs.LbSendmsg4, ebpf.AttachCGroupUDP4Sendmsg},
		{s.objs.LbRecvmsg4, ebpf.AttachCGroupUDP4Recvmsg},
		{s.objs.LbGetpeername4, ebpf.AttachCgroupInet4GetPeername},
		{s.objs.LbSockops, ebpf.AttachCGroupSockOps},
		{s.objs.LbUdpEgress, ebpf.AttachCGroupInetEgress},
	} {
		l, err := link.AttachCgroup(link.CgroupOptions{Path: cgroupPath, Attach: a.at, Program: a.prog})
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("attach %s to cgroup %s: %w", a.at, cgroupPath, err)
		}
		s.links = append(s.links, l)
	}
	return s, nil
}

// Sync makes the frontends and backends those node translates from inside (rs.Frontends:
// ClusterIPs, external and load-balancer addresses, node ports on its addresses and on
// 127.0.0.1, which only the namespaces SetHostNetns names reach; "" for a
// balancer shared by several nodes, which leaves what depends on the node to the veth
// programs), IPv4, TCP and UDP: socket hooks do not see SCTP, which the veth programs
// translate.
func (s *SockLB) Sync(rs *ir.Ruleset, node string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	want := map[sockLbSvcKey][]sockLbBackendValue{}
	affinity := map[sockLbSvcKey]uint32{}
	for _, fe := range rs.Frontends(node) {
		if fe.Scope != ir.FromInside || !fe.Addr.Is4() || (fe.Port.Protocol != ir.TCP && fe.Port.Protocol != ir.UDP) {
			continue
		}
		k := sockLbSvcKey{Vip: ipv4Key(fe.Addr), Port: portKey16(fe.Listen), Protocol: uint8(fe.Port.Protocol)}
		if _, dup := want[k]; dup {
			continue
		}
		bs := []sockLbBackendValue{}
		for _, b := range fe.Backends {
			if b.IP.Is4() {
				bs = append(bs, sockLbBackendValue{Addr: ipv4Key(b.IP), Port: portKey16(b.Port)})
			}
		}
		want[k] = bs
		affinity[k] = fe.Service.AffinitySeconds
	}
	backends := 0
	for _, bs := range want {
		backends += len(bs)
	}
	for _, m := range []struct {
		name string
		need int
		room uint32
	}{{"lb_services", len(want), s.objs.LbServices.MaxEntries()}, {"lb_backends", backends, s.objs.LbBackends.MaxEntries()}} {
		if m.need > int(m.room) {
			return &MapFullError{Map: m.name, Need: m.need, Room: int(m.room)}
		}
	}
	var errs []error
	for k, bs := range want {
		cur, ok := s.current[k]
		if ok && slices.Equal(cur.backends, bs) {
			if cur.affinity != affinity[k] {
				// Affinity switched on or off: the same backends, under the same id.
				if err := s.objs.LbServices.Put(k, sockLbSvcValue{Id: cur.id, Count: uint32(len(bs)), Affinity: affinity[k]}); err != nil {
					errs = append(errs, err)
					continue
				}
				cur.affinity = affinity[k]
				s.current[k] = cur
			}
			continue
		}
		s.nextID++
		id := s.nextID
		var werr []error
		for i, b := range bs {
			werr = append(werr, s.objs.LbBackends.Put(sockLbBackendKey{Id: id, Index: uint32(i)}, b))
		}
		if err := errors.Join(werr...); err != nil {
			errs = append(errs, err)
			s.dropBackends(id, len(bs))
			continue // the frontend keeps its previous backends
		}
		if err := s.objs.LbServices.Put(k, sockLbSvcValue{Id: id, Count: uint32(len(bs)), Affinity: affinity[k]}); err != nil {
			errs = append(errs, err)
			s.dropBackends(id, len(bs))
			continue
		}
		if ok {
			s.dropBackends(cur.id, len(cur.backends))
		}
		s.current[k] = lbEntry{id: id, affinity: affinity[k], backends: bs}
	}
	for k, cur := range s.current {
		if _, ok := want[k]; ok {
			continue
		}
		errs = append(errs, s.objs.LbServices.Delete(k))
		s.dropBackends(cur.id, len(cur.backends))
		delete(s.current, k)
	}
	return errors.Join(errs...)
}

// SetHostNetns names the nodes' own network namespaces, by cookie (NetnsCookie): their sockets
// reach node ports on 127.0.0.0/8 as kube-proxy's localhost node ports do. Sockets of other
// namespaces (pods) keep their loopback to themselves.
func (s *SockLB) SetHostNetns(cookies []uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.objs.LbHostNetns == nil {
		return errors.New("connect-time load balancer closed")
	}
	want := map[uint64]bool{}
	var errs []error
	for _, c := range cookies {
		want[c] = true
		errs = append(errs, s.objs.LbHostNetns.Put(c, uint8(1)))
	}
	var k uint64
	var stale []uint64
	for it := s.objs.LbHostNetns.Iterate(); it.Next(&k, new(uint8)); {
		if !want[k] {
			stale = append(stale, k)
		}
	}
	for _, k := range stale {
		errs = append(errs, s.objs.LbHostNetns.Delete(k))
	}
	return errors.Join(errs...)
}

func (s *SockLB) dropBackends(id uint32, n int) {
	for i := 0; i < n; i++ {
		_ = s.objs.LbBackends.Delete(sockLbBackendKey{Id: id, Index: uint32(i)})
	}
}

// Frontend returns the Service address and port a TCP connection (or UDP flow) from client to
// backend addressed, when the hooks translated it (false otherwise, or once the LRU map let it
// go).
func (s *SockLB) Frontend(client, backend netip.AddrPort) (netip.AddrPort, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.objs.LbFlows == nil {
		return netip.AddrPort{}, false // closed
	}
	return FrontendIn(s.objs.LbFlows, client, backend)
}

// FlowNotes returns the map in which the hooks note each translated flow's frontend (lb_flows),
// for the flow records of agents in other processes (FrontendIn); nil once closed. It stays
// the balancer's: callers duplicate its descriptor rather than close it.
func (s *SockLB) FlowNotes() *ebpf.Map {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.objs.LbFlows
}

// FrontendIn is Frontend on a balancer's notes (FlowNotes), possibly another process's.
func FrontendIn(notes *ebpf.Map, client, backend netip.AddrPort) (netip.AddrPort, bool) {
	if !client.Addr().Is4() || !backend.Addr().Is4() {
		return netip.AddrPort{}, false
	}
	k := sockLbFlowKey{Saddr: ipv4Key(client.Addr()), Daddr: ipv4Key(backend.Addr()), Sport: portKey16(client.Port()), Dport: portKey16(backend.Port())}
	var v sockLbRevnatValue
	if err := notes.Lookup(k, &v); err != nil {
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(addrOf(v.Vip), portOf(v.Port)), true
}

// LBCounters are the connect-time load balancer's counters, summed over CPUs.
type LBCounters struct {
	Connect, Sendmsg, Recvmsg, Getpeername, NoBackend uint64
}

// Counters reads the counters.
func (s *SockLB) Counters() (LBCounters, error) {
	var out LBCounters
	for i, dst := range []*uint64{&out.Connect, &out.Sendmsg, &out.Recvmsg, &out.Getpeername, &out.NoBackend} {
		n, err := sumPerCPU(s.objs.LbCounters, uint32(i))
		if err != nil {
			return out, err
		}
		*dst = n
	}
	return out, nil
}

// Close detaches the programs and releases the maps.
func (s *SockLB) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	for _, l := range s.links {
		errs = append(errs, l.Close())
	}
	s.links = nil
	errs = append(errs, s.objs.Close())
	s.objs = sockObjects{} // closed: Frontend answers nothing
	return errors.Join(errs...)
}
