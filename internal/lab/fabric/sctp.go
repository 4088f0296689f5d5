package fabric

import (
	"encoding/binary"
	"errors"
	"hash/crc32"
)

// This kernel has no SCTP sockets (CONFIG_IP_SCTP is off) while netfilter tracks SCTP, so the
// lab speaks just enough SCTP over raw IP sockets for real SCTP packets to cross the dataplane:
// a probe sends INIT, a server answers INIT-ACK (or ABORT for a port it does not serve).

const (
	protoSCTP     = 132
	chunkInit     = 1
	chunkInitAck  = 2
	chunkAbort    = 6
	paramCookie   = 7
	sctpHeaderLen = 12
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// sctpPacket is the part of an SCTP packet the lab reads.
type sctpPacket struct {
	SrcPort, DstPort uint16
	VTag             uint32
	ChunkType        uint8
	InitiateTag      uint32 // of INIT and INIT-ACK
}

// checksum computes the CRC32c over the packet with a zero checksum field, which RFC 9260
// (appendix A) stores least significant byte first.
func checksum(pkt []byte) uint32 {
	var zero [4]byte
	c := crc32.Update(0, castagnoli, pkt[:8])
	c = crc32.Update(c, castagnoli, zero[:])
	return crc32.Update(c, castagnoli, pkt[12:])
}

func finish(pkt []byte) []byte {
	binary.LittleEndian.PutUint32(pkt[8:12], checksum(pkt))
	return pkt
}

func header(src, dst uint16, vtag uint32, chunkLen int) []byte {
	pkt := make([]byte, sctpHeaderLen, sctpHeaderLen+chunkLen)
	binary.BigEndian.PutUint16(pkt[0:], src)
	binary.BigEndian.PutUint16(pkt[2:], dst)
	binary.BigEndian.PutUint32(pkt[4:], vtag)
	return pkt
}

// encodeInit builds an INIT chunk packet (verification tag 0, as RFC 9260 requires).
func encodeInit(src, dst uint16, initiateTag, tsn uint32) []byte {
	pkt := header(src, dst, 0, 20)
	chunk := make([]byte, 20)
	chunk[0] = chunkInit
	binary.BigEndian.PutUint16(chunk[2:], 20)
	binary.BigEndian.PutUint32(chunk[4:], initiateTag)
	binary.BigEndian.PutUint32(chunk[8:], 65535) // a_rwnd
	binary.BigEndian.PutUint16(chunk[12:], 1)    // outbound streams
	binary.BigEndian.PutUint16(chunk[14:], 1)    // inbound streams
	binary.BigEndian.PutUint32(chunk[16:], tsn)
	return finish(append(pkt, chunk...))
}

// encodeInitAck answers an INIT: the packet carries the INIT's initiate tag as verification
// tag, and a state cookie parameter (content is ours to choose; a cookie is mandatory).
func encodeInitAck(src, dst uint16, peerTag, myTag uint32) []byte {
	cookie := []byte("rampart-lab-cookie")
	paramLen := 4 + len(cookie)
	padded := (paramLen + 3) &^ 3
	chunkLen := 20 + padded
	pkt := header(src, dst, peerTag, chunkLen)
	chunk := make([]byte, chunkLen)
	chunk[0] = chunkInitAck
	binary.BigEndian.PutUint16(chunk[2:], uint16(20+paramLen))
	binary.BigEndian.PutUint32(chunk[4:], myTag)
	binary.BigEndian.PutUint32(chunk[8:], 65535)
	binary.BigEndian.PutUint16(chunk[12:], 1)
	binary.BigEndian.PutUint16(chunk[14:], 1)
	binary.BigEndian.PutUint32(chunk[16:], myTag)
	binary.BigEndian.PutUint16(chunk[20:], paramCookie)
	binary.BigEndian.PutUint16(chunk[22:], uint16(paramLen))
	copy(chunk[24:], cookie)
	return finish(append(pkt, chunk...))
}

// encodeAbort answers an INIT to a port nobody serves (tag = the INIT's initiate tag).
func encodeAbort(src, dst uint16, peerTag uint32) []byte {
	pkt := header(src, dst, peerTag, 4)
	chunk := []byte{chunkAbort, 0, 0, 4}
	return finish(append(pkt, chunk...))
}

var errNotSCTP = errors.New("not a valid SCTP packet")

// decodeSCTP parses the SCTP packet after the IP header, checking the checksum.
func decodeSCTP(b []byte) (sctpPacket, error) {
	var p sctpPacket
	if len(b) < sctpHeaderLen+4 {
		return p, errNotSCTP
	}
	if binary.LittleEndian.Uint32(b[8:12]) != checksum(b) {
		return p, errNotSCTP
	}
	p.SrcPort = binary.BigEndian.Uint16(b[0:])
	p.DstPort = binary.BigEndian.Uint16(b[2:])
	p.VTag = binary.BigEndian.Uint32(b[4:])
	p.ChunkType = b[12]
	if (p.ChunkType == chunkInit || p.ChunkType == chunkInitAck) && len(b) >= sctpHeaderLen+20 {
		p.InitiateTag = binary.BigEndian.Uint32(b[16:])
	}
	return p, nil
}
