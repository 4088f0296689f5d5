package ctsweep

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"syscall"
	"time"

	mdnetlink "github.com/mdlayher/netlink"
	"github.com/ti-mo/conntrack"
	"github.com/ti-mo/netfilter"
	"golang.org/x/sys/unix"

	"github.com/rampart-sec/rampart/internal/nsexec"
)

// getter reads conntrack entries by their original tuple, many per round trip: one sendmsg
// carries a batch of IPCTNL_MSG_CT_GET requests and each reply is one recvmsg. Asking one entry
// at a time (conntrack.Conn.Get: a request with an acknowledgement, each reply peeked and then
// read) took five system calls per entry, which under a load of short connections cost the
// agent a sixth of a core.
type getter struct {
	mu  sync.Mutex
	fd  int
	seq uint32
	buf []byte
}

// getBatch bounds the requests in flight, so their replies (a few hundred bytes each) fit the
// socket's receive buffer.
const getBatch = 256

// CTA_* attribute types of a tuple (linux/netfilter/nfnetlink_conntrack.h).
const (
	ctaTupleOrig  = 1
	ctaTupleIP    = 1
	ctaTupleProto = 2
	ctaIPv4Src    = 1
	ctaIPv4Dst    = 2
	ctaProtoNum   = 1
	ctaProtoSrc   = 2
	ctaProtoDst   = 3
	ctMsgGet      = 1
)

// newGetter opens a netfilter netlink socket in the named namespace ("" for the current one).
func newGetter(nsName string) (*getter, error) {
	// A lost reply must not block the reader forever; a dropped batch costs one round.
	fd, err := nsexec.NetlinkSocket(nsName, unix.NETLINK_NETFILTER, 1<<20, 2*time.Second)
	if err != nil {
		return nil, fmt.Errorf("conntrack socket in %q: %w", nsName, err)
	}
	return &getter{fd: fd, buf: make([]byte, 1<<16)}, nil
}

func (g *getter) close() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.fd < 0 {
		return nil
	}
	err := unix.Close(g.fd)
	g.fd = -1
	return err
}

// query is one IPv4 entry to read, by its original tuple.
type query struct {
	proto    uint8
	src, dst netip.AddrPort
}

// get reads the entries of qs: out[i] is nil where the table has no such entry.
func (g *getter) get(qs []query) ([]*conntrack.Flow, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.fd < 0 {
		return nil, errors.New("conntrack socket closed")
	}
	out := make([]*conntrack.Flow, len(qs))
	for start := 0; start < len(qs); start += getBatch {
		if err := g.batch(qs[start:min(start+getBatch, len(qs))], out[start:]); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func (g *getter) batch(qs []query, out []*conntrack.Flow) error {
	var req []byte
	first := g.seq + 1
	for _, q := range qs {
		g.seq++
		m, err := getRequest(q, g.seq)
		if err != nil {
			return err
		}
		b, err := m.MarshalBinary()
		if err != nil {
			return err
		}
		req = append(req, b...)
	}
	if err := unix.Sendto(g.fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("conntrack get: %w", err)
	}
	for pending := len(qs); pending > 0; {
		n, _, err := unix.Recvfrom(g.fd, g.buf, 0)
		if err != nil {
			return fmt.Errorf("conntrack get: %w", err)
		}
		msgs, err := syscall.ParseNetlinkMessage(g.buf[:n])
		if err != nil {
			return fmt.Errorf("conntrack get: %w", err)
		}
		for _, m := range msgs {
			i := int(m.Header.Seq - first)
			if m.Header.Seq < first || i >= len(qs) {
				continue // a reply to an earlier batch that timed out
			}
			pending--
			if m.Header.Type == unix.NLMSG_ERROR {
				if len(m.Data) < 4 {
					return errors.New("conntrack get: short error message")
				}
				if errno := -int32(binary.NativeEndian.Uint32(m.Data)); errno != 0 && unix.Errno(errno) != unix.ENOENT {
					return fmt.Errorf("conntrack get: %w", unix.Errno(errno))
				}
				continue // not found
			}
			var ev conntrack.Event
			nm := mdnetlink.Message{Header: mdnetlink.Header{Length: m.Header.Len, Type: mdnetlink.HeaderType(m.Header.Type),
				Flags: mdnetlink.HeaderFlags(m.Header.Flags), Sequence: m.Header.Seq, PID: m.Header.Pid}, Data: m.Data}
			if err := ev.Unmarshal(nm); err != nil {
				return fmt.Errorf("conntrack get: %w", err)
			}
			out[i] = ev.Flow
		}
	}
	return nil
}

// getRequest is an IPCTNL_MSG_CT_GET for q's original tuple.
func getRequest(q query, seq uint32) (mdnetlink.Message, error) {
	ae := netfilter.NewAttributeEncoder()
	ae.Nested(ctaTupleOrig, func(t *mdnetlink.AttributeEncoder) error {
		t.Nested(ctaTupleIP, func(ip *mdnetlink.AttributeEncoder) error {
			src, dst := q.src.Addr().As4(), q.dst.Addr().As4()
			ip.Bytes(ctaIPv4Src, src[:])
			ip.Bytes(ctaIPv4Dst, dst[:])
			return nil
		})
		t.Nested(ctaTupleProto, func(p *mdnetlink.AttributeEncoder) error {
			p.Uint8(ctaProtoNum, q.proto)
			p.Uint16(ctaProtoSrc, q.src.Port())
			p.Uint16(ctaProtoDst, q.dst.Port())
			return nil
		})
		return nil
	})
	m, err := netfilter.EncodeNetlink(netfilter.Header{SubsystemID: netfilter.NFSubsysCTNetlink, MessageType: ctMsgGet,
		Family: netfilter.ProtoIPv4, Flags: mdnetlink.Request}, ae)
	if err != nil {
		return m, err
	}
	m.Header.Sequence = seq
	m.Header.Length = uint32(unix.NLMSG_HDRLEN + len(m.Data)) // MarshalBinary checks it
	return m, nil
}
