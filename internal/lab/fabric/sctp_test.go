package fabric

import (
	"encoding/binary"
	"hash/crc32"
	"testing"
)

// The CRC32c check value of "123456789" is 0xE3069283 (RFC 3720, and every CRC catalogue).
func TestCRC32cVector(t *testing.T) {
	if got := crc32.Checksum([]byte("123456789"), castagnoli); got != 0xE3069283 {
		t.Fatalf("crc32c = %#x", got)
	}
}

func TestSCTPRoundTrip(t *testing.T) {
	init := encodeInit(40000, 80, 0xdeadbeef, 7)
	p, err := decodeSCTP(init)
	if err != nil {
		t.Fatal(err)
	}
	if p.SrcPort != 40000 || p.DstPort != 80 || p.VTag != 0 || p.ChunkType != chunkInit || p.InitiateTag != 0xdeadbeef {
		t.Fatalf("decoded INIT %+v", p)
	}
	ack := encodeInitAck(80, 40000, p.InitiateTag, 0x1234)
	q, err := decodeSCTP(ack)
	if err != nil {
		t.Fatal(err)
	}
	if q.VTag != 0xdeadbeef || q.ChunkType != chunkInitAck || q.InitiateTag != 0x1234 || len(ack)%4 != 0 {
		t.Fatalf("decoded INIT-ACK %+v (len %d)", q, len(ack))
	}
	// The checksum is stored least significant byte first: the stored bytes, read as little
	// endian, equal the CRC of the packet with a zeroed field.
	z := append([]byte(nil), ack...)
	copy(z[8:12], []byte{0, 0, 0, 0})
	if binary.LittleEndian.Uint32(ack[8:]) != crc32.Checksum(z, castagnoli) {
		t.Fatal("checksum placement")
	}
	ack[20] ^= 1
	if _, err := decodeSCTP(ack); err == nil {
		t.Fatal("corrupted packet accepted")
	}
}
