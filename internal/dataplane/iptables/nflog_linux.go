package iptables

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/rampart-sec/rampart/internal/flow"
	"github.com/rampart-sec/rampart/internal/ir"
	"github.com/rampart-sec/rampart/internal/nsexec"
)

// nfnetlink_log (NFLOG) constants, from linux/netfilter/nfnetlink_log.h.
const (
	nfnlSubsysULOG   = 4
	nfulnlMsgPacket  = 0
	nfulnlMsgConfig  = 1
	nfulaCfgCmd      = 1
	nfulaCfgMode     = 2
	nfulaCfgNlbufsiz = 3
	nfulaCfgTimeout  = 4
	nfulaCfgQthresh  = 5
	nfulaCfgFlags    = 6
	nfulnlCfgCmdBind = 1
	nfulnlCopyPacket = 2
	nfulnlCfgFSeq    = 1
	nfulnlCfgFCt     = 2 // NFULNL_CFG_F_CONNTRACK: each packet's conntrack entry comes with it

	nfulaMark      = 2
	nfulaTimestamp = 3
	nfulaPayload   = 9
	nfulaPrefix    = 10
	nfulaSeq       = 12
	nfulaCt        = 18

	// ctnetlink attributes of NFULA_CT, from linux/netfilter/nfnetlink_conntrack.h.
	ctaTupleOrig    = 1
	ctaTupleIP      = 1
	ctaTupleProto   = 2
	ctaIPv4Dst      = 2
	ctaProtoDstPort = 3
)

// nflogSocket is a netlink socket bound to one NFLOG group in a network namespace.
type nflogSocket struct {
	fd    int
	group uint16
}

// openNFLOG binds group in the named network namespace ("" for the current one): the socket
// belongs to the namespace it was created in.
func openNFLOG(netns string, group uint16) (*nflogSocket, error) {
	// A large receive buffer absorbs bursts; what still overflows is counted from sequence gaps.
	fd, err := nsexec.NetlinkSocket(netns, unix.NETLINK_NETFILTER, 8<<20, 500*time.Millisecond)
	if err != nil {
		return nil, fmt.Errorf("nflog socket: %w", err)
	}
	s := &nflogSocket{fd: fd, group: group}
	mode := make([]byte, 6)
	binary.BigEndian.PutUint32(mode, 128) // copy range
	mode[4] = nfulnlCopyPacket
	// The conntrack entry carries the destination the client addressed before DNAT (a Service):
	// the rules see the packet after it. Kernels without ctnetlink refuse the flag; their
	// events name no Service.
	const flagStep = 2
	steps := [][]byte{
		attr(nfulaCfgCmd, []byte{nfulnlCfgCmdBind}),
		attr(nfulaCfgMode, mode),
		flagStep: attr(nfulaCfgFlags, be16(nfulnlCfgFSeq|nfulnlCfgFCt)),
		// Batches of up to 64 packets, flushed after at most 50 ms: far fewer wakeups under a
		// burst of new connections, well within the aggregator's one-second flush.
		attr(nfulaCfgQthresh, be32(64)),
		attr(nfulaCfgTimeout, be32(5)), // hundredths of a second
		attr(nfulaCfgNlbufsiz, be32(65536)),
	}
	for i, a := range steps {
		err := s.config(uint32(i+1), a)
		if err != nil && i == flagStep {
			err = s.config(uint32(i+1), attr(nfulaCfgFlags, be16(nfulnlCfgFSeq)))
		}
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("nflog group %d: %w", group, err)
		}
	}
	return s, nil
}

// config sends one NFULNL_MSG_CONFIG request and waits for its acknowledgement.
func (s *nflogSocket) config(seq uint32, attrs []byte) error {
	msg := nlmsg(nfnlSubsysULOG<<8|nfulnlMsgConfig, unix.NLM_F_REQUEST|unix.NLM_F_ACK, seq, unix.AF_UNSPEC, s.group, attrs)
	if err := unix.Sendto(s.fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return err
	}
	buf := make([]byte, 4096)
	for {
		n, _, err := unix.Recvfrom(s.fd, buf, 0)
		if err != nil {
			return err
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return err
		}
		for _, m := range msgs {
			if m.Header.Type == unix.NLMSG_ERROR && m.Header.Seq == seq && len(m.Data) >= 4 {
				if errno := int32(binary.NativeEndian.Uint32(m.Data)); errno != 0 {
					return unix.Errno(-errno)
				}
				return nil
			}
		}
	}
}

func (s *nflogSocket) Close() error { return unix.Close(s.fd) }

// read delivers logged packets to fn until ctx ends, with the destination their connection's
// first packet was addressed to (before DNAT; invalid when unknown) and their mark; lost reports messages the
// kernel dropped (sequence gaps, and a socket overflow before any gap is seen).
func (s *nflogSocket) read(ctx context.Context, fn func(prefix string, ts time.Time, payload []byte, origDst netip.AddrPort, mark uint32), lost func(n uint64)) error {
	buf := make([]byte, 1<<16)
	var lastSeq uint32
	haveSeq := false
	for ctx.Err() == nil {
		n, _, err := unix.Recvfrom(s.fd, buf, 0)
		switch {
		case errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR):
			continue
		case errors.Is(err, unix.ENOBUFS):
			continue // the gap in sequence numbers says how many
		case err != nil:
			return fmt.Errorf("nflog read: %w", err)
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			continue
		}
		for _, m := range msgs {
			if m.Header.Type != nfnlSubsysULOG<<8|nfulnlMsgPacket || len(m.Data) < 4 {
				continue
			}
			var prefix string
			var payload []byte
			var origDst netip.AddrPort
			var mark uint32
			ts := time.Now()
			for a := range attrs(m.Data[4:]) {
				switch a.typ {
				case nfulaPrefix:
					prefix = cString(a.val)
				case nfulaPayload:
					payload = a.val
				case nfulaCt:
					origDst = ctOrigDst(a.val)
				case nfulaMark:
					if len(a.val) == 4 {
						mark = binary.BigEndian.Uint32(a.val)
					}
				case nfulaTimestamp:
					if len(a.val) == 16 {
						ts = time.Unix(int64(binary.BigEndian.Uint64(a.val)), int64(binary.BigEndian.Uint64(a.val[8:]))*1000)
					}
				case nfulaSeq:
					if len(a.val) == 4 {
						seq := binary.BigEndian.Uint32(a.val)
						if haveSeq && seq > lastSeq+1 {
							lost(uint64(seq - lastSeq - 1))
						}
						lastSeq, haveSeq = seq, true
					}
				}
			}
			fn(prefix, ts, payload, origDst, mark)
		}
	}
	return nil
}

// ctOrigDst reads the IPv4 destination address and port of a conntrack entry's original tuple
// (ctnetlink attributes); invalid when absent.
func ctOrigDst(ct []byte) netip.AddrPort {
	var addr netip.Addr
	var port uint16
	for a := range attrs(ct) {
		if a.typ != ctaTupleOrig {
			continue
		}
		for t := range attrs(a.val) {
			for v := range attrs(t.val) {
				switch {
				case t.typ == ctaTupleIP && v.typ == ctaIPv4Dst && len(v.val) == 4:
					addr = netip.AddrFrom4([4]byte(v.val))
				case t.typ == ctaTupleProto && v.typ == ctaProtoDstPort && len(v.val) == 2:
					port = binary.BigEndian.Uint16(v.val)
				}
			}
		}
	}
	if !addr.IsValid() {
		return netip.AddrPort{}
	}
	return netip.AddrPortFrom(addr, port)
}

// packetEvent reads an IPv4 packet's tuple, length and TCP flags.
func packetEvent(payload []byte) (flow.Event, bool) {
	var ev flow.Event
	if len(payload) < 20 || payload[0]>>4 != 4 {
		return ev, false
	}
	ihl := int(payload[0]&0x0f) * 4
	proto, ok := ir.ProtocolOf(payload[9])
	if !ok || len(payload) < ihl+4 {
		return ev, false
	}
	src := netip.AddrFrom4([4]byte(payload[12:16]))
	dst := netip.AddrFrom4([4]byte(payload[16:20]))
	l4 := payload[ihl:]
	ev.Tuple = flow.Tuple{Protocol: proto,
		Src: netip.AddrPortFrom(src, binary.BigEndian.Uint16(l4)),
		Dst: netip.AddrPortFrom(dst, binary.BigEndian.Uint16(l4[2:]))}
	ev.Bytes = uint64(binary.BigEndian.Uint16(payload[2:4]))
	if proto == ir.TCP && len(l4) >= 14 {
		ev.TCPFlags = l4[13]
	}
	return ev, true
}

type nlattr struct {
	typ uint16
	val []byte
}

// attrs iterates netlink attributes (type without the nested/byte-order bits).
func attrs(b []byte) func(func(nlattr) bool) {
	return func(yield func(nlattr) bool) {
		for len(b) >= 4 {
			l := int(binary.NativeEndian.Uint16(b))
			if l < 4 || l > len(b) {
				return
			}
			if !yield(nlattr{binary.NativeEndian.Uint16(b[2:]) & 0x3fff, b[4:l]}) {
				return
			}
			l = (l + 3) &^ 3
			if l > len(b) {
				return
			}
			b = b[l:]
		}
	}
}

func attr(typ uint16, val []byte) []byte {
	l := 4 + len(val)
	b := make([]byte, (l+3)&^3)
	binary.NativeEndian.PutUint16(b, uint16(l))
	binary.NativeEndian.PutUint16(b[2:], typ)
	copy(b[4:], val)
	return b
}

// nlmsg builds a netlink message with an nfgenmsg header (family, version 0, res_id).
func nlmsg(typ, flags uint16, seq uint32, family uint8, resID uint16, attrs []byte) []byte {
	b := make([]byte, unix.NLMSG_HDRLEN+4+len(attrs))
	binary.NativeEndian.PutUint32(b, uint32(len(b)))
	binary.NativeEndian.PutUint16(b[4:], typ)
	binary.NativeEndian.PutUint16(b[6:], flags)
	binary.NativeEndian.PutUint32(b[8:], seq)
	b[16] = family
	binary.BigEndian.PutUint16(b[18:], resID)
	copy(b[20:], attrs)
	return b
}

func be16(v uint16) []byte { b := make([]byte, 2); binary.BigEndian.PutUint16(b, v); return b }
func be32(v uint32) []byte { b := make([]byte, 4); binary.BigEndian.PutUint32(b, v); return b }

func cString(b []byte) string {
	for i, c := range b {
		if c == 0 {
			return string(b[:i])
		}
	}
	return string(b)
}
