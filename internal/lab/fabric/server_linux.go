package fabric

import (
	"errors"
	"fmt"
	"io"
	"math/rand"
	"net"
	"sync"
	"time"

	"github.com/rampart-sec/rampart/internal/lab/controller"
)

// servers holds one pod's listeners. Sockets are opened inside the pod's namespace and then
// served by ordinary goroutines: a socket keeps the namespace it was created in.
type servers struct {
	closers []io.Closer
	wg      sync.WaitGroup
	mu      sync.Mutex
	conns   map[net.Conn]bool // open TCP connections, closed with the servers so the namespace can go
}

// startServers listens on every declared port: TCP answers each connection with the pod's
// name and the client's address as the server sees it ("ns/name 10.244.1.10:40000"), UDP
// answers each datagram likewise, and SCTP is answered on a raw socket.
func startServers(nsName, who string, ports []controller.TopoPort) (*servers, error) {
	s := &servers{}
	sctpPorts := map[uint16]bool{}
	seen := map[controller.TopoPort]bool{}
	err := inNetns(nsName, func() error {
		for _, p := range ports {
			// A pod may declare one port under several names; serve it once.
			if k := (controller.TopoPort{Port: p.Port, Protocol: p.Protocol}); seen[k] {
				continue
			} else {
				seen[k] = true
			}
			switch p.Protocol {
			case "TCP":
				l, err := net.Listen("tcp4", fmt.Sprintf(":%d", p.Port))
				if err != nil {
					return err
				}
				s.closers = append(s.closers, l)
				s.wg.Add(1)
				go s.serveTCP(l, who)
			case "UDP":
				c, err := net.ListenPacket("udp4", fmt.Sprintf(":%d", p.Port))
				if err != nil {
					return err
				}
				s.closers = append(s.closers, c)
				s.wg.Add(1)
				go s.serveUDP(c, who)
			case "SCTP":
				sctpPorts[p.Port] = true
			}
		}
		if len(sctpPorts) == 0 {
			return nil
		}
		c, err := net.ListenIP("ip4:132", nil)
		if err != nil {
			return fmt.Errorf("raw SCTP socket: %w", err)
		}
		s.closers = append(s.closers, c)
		s.wg.Add(1)
		go s.serveSCTP(c, sctpPorts)
		return nil
	})
	if err != nil {
		s.close()
		return nil, fmt.Errorf("serve ports of %s: %w", who, err)
	}
	return s, nil
}

func (s *servers) close() {
	if s == nil {
		return
	}
	for _, c := range s.closers {
		_ = c.Close()
	}
	s.wg.Wait()
	s.mu.Lock()
	for c := range s.conns {
		_ = c.Close()
	}
	s.mu.Unlock()
}

func (s *servers) serveTCP(l net.Listener, who string) {
	defer s.wg.Done()
	for {
		c, err := l.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		s.mu.Lock()
		if s.conns == nil {
			s.conns = map[net.Conn]bool{}
		}
		s.conns[c] = true
		s.mu.Unlock()
		go func() {
			defer func() {
				s.mu.Lock()
				delete(s.conns, c)
				s.mu.Unlock()
			}()
			// Greet with the pod's name, then echo until the client closes (or goes quiet for
			// ten minutes), so tests can hold a connection open across policy changes. A client
			// that opens with "quit" is answered and closed at once: the server closes first
			// (connection-rate measurements: the TIME_WAIT is the server's, not the client's).
			defer c.Close()
			if _, err := c.Write([]byte(who + " " + c.RemoteAddr().String() + "\n")); err != nil {
				return
			}
			_ = c.SetDeadline(time.Now().Add(10 * time.Minute))
			first := make([]byte, 4096)
			n, err := c.Read(first)
			if err != nil || string(first[:n]) == "quit\n" {
				return
			}
			if _, err := c.Write(first[:n]); err != nil {
				return
			}
			_, _ = io.Copy(c, c)
		}()
	}
}

func (s *servers) serveUDP(c net.PacketConn, who string) {
	defer s.wg.Done()
	buf := make([]byte, 2048)
	for {
		_, from, err := c.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		_, _ = c.WriteTo([]byte(who+" "+from.String()+"\n"), from)
	}
}

// serveSCTP answers INITs: INIT-ACK for a served port, ABORT otherwise. Every raw SCTP socket
// in the namespace sees every SCTP packet (probes running from this pod have their own), so
// everything but INIT is ignored here.
func (s *servers) serveSCTP(c *net.IPConn, ports map[uint16]bool) {
	defer s.wg.Done()
	buf := make([]byte, 2048)
	for {
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		p, err := decodeSCTP(buf[:n])
		if err != nil || p.ChunkType != chunkInit || p.VTag != 0 {
			continue
		}
		var reply []byte
		if ports[p.DstPort] {
			reply = encodeInitAck(p.DstPort, p.SrcPort, p.InitiateTag, rand.Uint32()|1)
		} else {
			reply = encodeAbort(p.DstPort, p.SrcPort, p.InitiateTag)
		}
		_, _ = c.WriteTo(reply, from)
	}
}
