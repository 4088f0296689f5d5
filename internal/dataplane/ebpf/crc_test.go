package ebpf

import (
	"encoding/binary"
	"hash/crc32"
	"math/rand"
	"testing"
)

// TestCRCZeroOps checks the update the programs make to an SCTP checksum when a port changes
// (bpf/policy.c, crc_delta and sctp_port_crc, mirrored here) against the checksum computed afresh.
func TestCRCZeroOps(t *testing.T) {
	ops := crcZeroOps()
	table := crc32.MakeTable(crc32.Castagnoli)
	sum := func(pkt []byte) uint32 { // RFC 9260: over the packet with a zero checksum field
		c := crc32.Update(0, table, pkt[:8])
		c = crc32.Update(c, table, []byte{0, 0, 0, 0})
		return crc32.Update(c, table, pkt[12:])
	}
	r := rand.New(rand.NewSource(1))
	for i := 0; i < 500; i++ {
		pkt := make([]byte, 12+r.Intn(1500))
		r.Read(pkt)
		binary.LittleEndian.PutUint32(pkt[8:], sum(pkt))
		off := 2 * r.Intn(2) // source or destination port
		var newPort [2]byte
		r.Read(newPort[:])
		// The two changed bytes, fed into an empty register (crc_delta).
		reg := uint32(pkt[off]^newPort[0]) | uint32(pkt[off+1]^newPort[1])<<8
		for i := 0; i < 16; i++ {
			reg = reg>>1 ^ (reg&1)*0x82f63b78
		}
		n := len(pkt) - off - 2
		for k := 0; k < 16; k++ {
			if n&(1<<k) == 0 {
				continue
			}
			var v uint32
			for b := 0; b < 32; b++ {
				if reg&(1<<b) != 0 {
					v ^= ops[k][b]
				}
			}
			reg = v
		}
		updated := binary.LittleEndian.Uint32(pkt[8:]) ^ reg
		copy(pkt[off:], newPort[:])
		if want := sum(pkt); updated != want {
			t.Fatalf("length %d, port at %d: updated checksum %08x, computed %08x", len(pkt), off, updated, want)
		}
	}
}
