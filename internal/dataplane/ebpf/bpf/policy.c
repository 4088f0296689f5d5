// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// Policy enforcement on the host side of a pod's veth (docs/ebpf-design.md).
//   from_pod: TC ingress of the host-side veth; decides the pod's egress, and for a local
//             destination pod its ingress too, handing the packet straight to it.
//   to_pod:   TC egress of the host-side veth; decides the pod's ingress for everything else.
//   svc_xmit: route (LWT) program of the Service range: the node's own packets to Services.
//   from_uplink: TC ingress of the node's uplink: packets for local pods, handed straight to
//             them; replies to svc_xmit's packets from other nodes; and traffic from outside
//             the cluster to node ports and external and load-balancer addresses, translated
//             here (uplink_dnat) before the node's stack sees it.
//   xdp_uplink: XDP on the node's uplink: drops packets from or to a blocked prefix (threat
//             feeds, automatic blocks) before the kernel allocates anything for them.
// Every TC program drops blocked packets too (pods' own traffic never crosses the uplink's XDP),
// before conntrack and before policy.
// A new flow is looked up by remote identity (LPM on the address) and then by (endpoint,
// identity, protocol, direction, destination port) in an LPM trie whose prefix covers the port;
// allowed flows are remembered per endpoint so replies and later packets pass.
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define DIR_INGRESS 0
#define DIR_EGRESS 1

#define TCP_FIN 0x01
#define TCP_SYN 0x02
#define TCP_RST 0x04
#define TCP_ACK 0x10

// Endpoint flags (an enum so that bpf2go gives the loader the same values).
enum ep_flag {
	EP_SELECTED_INGRESS = 1, // some policy selects the endpoint for ingress
	EP_SELECTED_EGRESS = 2,
	EP_FAST = 4, // MACs known: local pods may hand packets straight to this one
};

struct endpoint {
	__u32 id;
	__u32 ifindex; // host-side veth; 0: not bound to an interface (tests)
	enum ep_flag flags; // EP_SELECTED_* | EP_FAST
	__u8 mac[6];      // the pod's side of the veth
	__u8 host_mac[6]; // the node's side
};

struct ipcache_key {
	__u32 prefixlen;
	__u32 addr; // network order
};

struct policy_key {
	__u32 prefixlen; // 80 + port bits
	__u32 endpoint;
	__u32 identity;
	__u8 protocol;
	__u8 direction;
	__u16 port; // network order, so its prefix is its high bits
};

struct policy_value {
	__u32 allow;
	__u32 rule; // the deciding rule's id in this generation's rule table (0: none), for flow records
};

struct ct_key {
	__u32 endpoint;
	__u32 saddr;
	__u32 daddr;
	__u16 sport;
	__u16 dport;
	__u32 protocol;
};

// Each flow has two entries per endpoint, one per direction, so any packet finds its flow in
// one lookup; the entry for the reply direction carries CT_REPLY. CT_NAT marks flows the
// per-packet DNAT translated, so only their replies pay for the reverse-NAT lookup.
// CT_COUNTED marks (on the forward entry at the pod's ingress) a connection the
// connection-limit shield counts for its source, CT_CLOSED one whose first FIN or RST took it
// off that count.
enum ct_flag {
	CT_REPLY = 1,
	CT_NAT = 2,
	CT_COUNTED = 4,
	CT_CLOSED = 8,
};

// nat_reply: a reply of a translated flow, whose source must read as the frontend again.
static __always_inline int nat_reply(__u32 ctflags)
{
	return (ctflags & (CT_REPLY | CT_NAT)) == (CT_REPLY | CT_NAT);
}

// Packet and byte counts are per direction entry (the flow records add both); tcp_flags is
// the OR of the flags seen.
struct ct_value {
	__u64 seen_ns;
	__u64 packets;
	__u64 bytes;
	enum ct_flag flags;
	__u8 tcp_flags;
	__u8 pad[3];
};

// Services: a frontend (ClusterIP, node port on a node address, external or load-balancer
// address) and its backends, chosen per flow by a hash of the client. A frontend reached from
// outside the cluster has its own entry (scope SCOPE_OUTSIDE), with its own backends
// (externalTrafficPolicy: Local keeps only the node's).
#define SCOPE_INSIDE 0
#define SCOPE_OUTSIDE 1

struct svc_key {
	__u32 vip;
	__u16 port; // network order
	__u8 protocol;
	__u8 scope;
};

enum svc_flag {
	SVC_LOCAL = 1,        // only local backends, clients keep their address (no SNAT)
	SVC_NODEPORT = 2,     // a node port: without backends the node's stack refuses it
	SVC_NO_ENDPOINTS = 4, // the Service port has no endpoint at all: refused, not dropped
};

struct svc_value {
	__u32 id;
	__u32 count; // backends
	enum svc_flag flags;
	__u32 affinity; // sessionAffinity ClientIP's timeout in seconds (0: none)
	__u32 rev;      // changes with the backends: a client's affinity holds within one rev
};

// Session affinity (ClientIP): the backend (by index) a client last used, per frontend.
struct affinity_key {
	__u32 client;
	__u32 id; // the frontend's
};

struct affinity_value {
	__u64 last_ns;
	__u32 index;
	__u32 rev;
};

struct backend_key {
	__u32 id;
	__u32 index;
};

struct backend_value {
	__u32 addr;
	__u16 port; // network order
	__u16 pad;
};

// Reverse NAT: the client's flow to a backend, and the frontend the client addressed.
struct revnat_key {
	__u32 client;
	__u32 backend;
	__u16 cport;
	__u16 bport;
	__u32 protocol;
};

enum revnat_flag {
	RN_OUTSIDE = 1, // the client is outside the node: the reply goes straight to the uplink
};

struct revnat_value {
	__u32 vip;
	__u16 vport;
	__u16 flags; // enum revnat_flag
};

// Traffic from outside to a remote backend (externalTrafficPolicy: Cluster) leaves with the
// node's address and a port of its own (SNAT), so that the backend's reply comes back through
// this node. nat_out holds every outside flow's translation, so that its later packets keep
// their backend; nat_back leads a backend's reply to the client.
struct nat_out_key {
	__u32 client;
	__u32 vip;
	__u16 cport;
	__u16 vport;
	__u32 protocol;
};

struct nat_out_value {
	__u32 backend;
	__u16 bport;
	__u16 natport; // network order; 0: not SNATed
};

struct nat_back_key {
	__u32 backend;
	__u16 bport;
	__u16 natport;
	__u32 protocol;
};

struct nat_back_value {
	__u32 client;
	__u32 vip;
	__u16 cport;
	__u16 vport;
};

// The node's address (SNAT source) and its uplink, written by the agent.
struct host_config {
	__u32 addr; // network order
	__u32 uplink; // ifindex
};

// Counters read by the observability layer, indexed by enum counter.
enum counter {
	C_PASS_NOT_IP,
	C_PASS_NO_ENDPOINT,
	C_PASS_NOT_SELECTED,
	C_PASS_CT,
	C_ALLOW_INGRESS,
	C_DROP_INGRESS,
	C_DROP_SPOOF,
	C_PASS_OTHER_PROTO,
	C_DNAT,
	C_REVNAT,
	C_NO_BACKEND,
	C_REDIRECT_PEER,   // handed from a local pod to a local pod
	C_REDIRECT_UPLINK, // handed from the uplink to a local pod
	C_ALLOW_EGRESS,
	C_DROP_EGRESS,
	C_FLOW_LOST, // flow events the ring buffer had no room for
	C_DROP_BLOCKED,     // dropped by the blocklist in a TC program
	C_XDP_DROP_BLOCKED, // dropped by the blocklist in XDP on the uplink
	C_DROP_SYN_LIMIT,   // a TCP SYN over its source's rate limit toward a limited pod
	C_DROP_QUARANTINE,  // to or from a quarantined pod, and not allowed
	C_DROP_SHIELD,      // a TCP SYN with too small an MSS toward a shielded pod
	C_DNAT_OUTSIDE,     // a packet from outside translated to a backend on the uplink
	C_SNAT_OUTSIDE,     // ... and sent on to a backend on another node with the node's address
	C_NAT_BACK,         // a backend's reply to such a packet, sent back to its client
	C_MAX,
};

// The tables of one generation of policy and Services (endpoints, ipcache, policy, services,
// backends, service_range) exist twice, in slots 0 and 1 of an array of maps each. The agent
// writes only the differences into the slot not in force and then switches `active` to it: a
// packet reads the generation in force once and looks everything up in its slot, so it sees the
// old tables or the new ones, never a half-written state, and the programs stay loaded.
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32); // the generation in force; its tables are in slot generation & 1
} active SEC(".maps");

struct endpoints_map {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC); // written by the agent only: memory as used, not as sized
	__type(key, __u32); // pod IPv4 address, network order
	__type(value, struct endpoint);
} endpoints0 SEC(".maps"), endpoints1 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 2);
	__type(key, __u32);
	__array(values, struct endpoints_map);
} endpoints SEC(".maps") = {.values = {&endpoints0, &endpoints1}};

struct ipcache_map {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 1 << 20);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct ipcache_key);
	__type(value, __u32);
} ipcache0 SEC(".maps"), ipcache1 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 2);
	__type(key, __u32);
	__array(values, struct ipcache_map);
} ipcache SEC(".maps") = {.values = {&ipcache0, &ipcache1}};

struct policy_map {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 1 << 22);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct policy_key);
	__type(value, struct policy_value);
} policy0 SEC(".maps"), policy1 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 2);
	__type(key, __u32);
	__array(values, struct policy_map);
} policy SEC(".maps") = {.values = {&policy0, &policy1}};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1 << 18);
	__type(key, struct ct_key);
	__type(value, struct ct_value);
} conntrack SEC(".maps");

struct services_map {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC); // written by the agent only: memory as used, not as sized
	__type(key, struct svc_key);
	__type(value, struct svc_value);
} services0 SEC(".maps"), services1 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 2);
	__type(key, __u32);
	__array(values, struct services_map);
} services SEC(".maps") = {.values = {&services0, &services1}};

// The smallest prefixes holding every ClusterIP (addr, mask) and every other frontend address
// reached from inside (node addresses, external and load-balancer addresses; addr2, mask2):
// packets outside both skip the Service lookup. One per slot; {addr 0, mask all ones} when
// there is none.
struct svc_range {
	__u32 addr; // network order
	__u32 mask; // network order
	__u32 addr2;
	__u32 mask2;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2); // by slot
	__type(key, __u32);
	__type(value, struct svc_range);
} service_range SEC(".maps");

struct backends_map {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1 << 20);
	__uint(map_flags, BPF_F_NO_PREALLOC); // written by the agent only: memory as used, not as sized
	__type(key, struct backend_key);
	__type(value, struct backend_value);
} backends0 SEC(".maps"), backends1 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 2);
	__type(key, __u32);
	__array(values, struct backends_map);
} backends SEC(".maps") = {.values = {&backends0, &backends1}};

// active_gen is the generation in force.
static __always_inline __u32 active_gen(void)
{
	__u32 zero = 0;
	__u32 *g = bpf_map_lookup_elem(&active, &zero);
	return g ? *g : 0;
}

// lookup_in looks key up in generation gen's table of an array of maps (endpoints, ipcache,
// policy, services, backends).
static __always_inline void *lookup_in(void *outer, __u32 gen, const void *key)
{
	__u32 slot = gen & 1;
	void *inner = bpf_map_lookup_elem(outer, &slot);
	return inner ? bpf_map_lookup_elem(inner, key) : NULL;
}

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1 << 18);
	__type(key, struct revnat_key);
	__type(value, struct revnat_value);
} revnat SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1 << 16); // LRU maps are preallocated: memory the agent's limit counts
	__type(key, struct affinity_key);
	__type(value, struct affinity_value);
} affinity SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1 << 16); // LRU maps are preallocated: memory the agent's limit counts
	__type(key, struct nat_out_key);
	__type(value, struct nat_out_value);
} nat_out SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1 << 16); // LRU maps are preallocated: memory the agent's limit counts
	__type(key, struct nat_back_key);
	__type(value, struct nat_back_value);
} nat_back SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct host_config);
} host SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, C_MAX);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

static __always_inline void count(__u32 c)
{
	__u64 *v = bpf_map_lookup_elem(&counters, &c);
	if (v)
		*v += 1;
}

// Flow events (docs/ebpf-design.md, flow records): one per denied packet and per new tracked
// flow, read by the agent, which resolves rule ids with the table of the generation whose
// tables decided them. The ring buffer outlives generations (it is carried over like conntrack).
struct flow_event {
	__u64 ts_ns;
	__u32 generation;
	__u32 rule;
	__u32 saddr;
	__u32 daddr;
	__u32 orig_daddr; // the Service frontend, when this program translated the packet (else 0)
	__u32 len;
	__u16 sport;
	__u16 dport;
	__u16 orig_dport;
	__u8 protocol;
	__u8 direction;
	__u8 allowed;
	__u8 tcp_flags;
	__u8 blocked; // not decided by policy: enum drop_kind (a sample of those drops)
	__u8 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
} flow_events SEC(".maps");

// Unread bytes in flow_events past which an event wakes the agent (a sixteenth of the ring).
#define FLOW_WAKEUP_BYTES (1 << 16)

// Drops that policy did not decide, reported in flow_event.blocked.
enum drop_kind {
	DROP_BLOCKLIST = 1, // from or to a blocked prefix
	DROP_SYN_LIMIT = 2, // a SYN over its source's rate limit
	DROP_QUARANTINE = 3, // to or from a quarantined pod
	DROP_SHIELD = 4,     // a shield's drop (a virtual patch)
	DROP_CONN_LIMIT = 5, // a SYN over its source's open connections (the connection-limit shield)
};

// Shields: virtual patches of known vulnerabilities for the selected pods. min_mss: TCP SYNs
// (and SYN-ACKs) toward the pod carrying an MSS option below it are dropped, the SACK Panic
// mitigation (CVE-2019-11477/11478/11479: tiny segments make the kernel's SACK handling
// overflow); 0: off.
struct shield {
	__u16 min_mss;
	__u16 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC); // written by the agent only
	__type(key, __u32);                   // the pod's address, network order
	__type(value, struct shield);
} shields SEC(".maps");

// tcp_syn_mss reads the MSS option of the TCP header at l4 (0: none). A global function: the
// verifier checks its bounded walk over the options once.
__attribute__((noinline)) __u32 tcp_syn_mss(struct __sk_buff *skb, __u32 l4)
{
	__u8 b;
	if (bpf_skb_load_bytes(skb, l4 + 12, &b, 1))
		return 0;
	__u32 end = l4 + (b >> 4) * 4;
	__u32 off = l4 + 20;
	for (int i = 0; i < 40 && off < end; i++) {
		__u8 opt[4];
		if (bpf_skb_load_bytes(skb, off, opt, 1))
			return 0;
		if (opt[0] == 0) // end of options
			return 0;
		if (opt[0] == 1) { // no-op
			off++;
			continue;
		}
		if (off + 2 > end || bpf_skb_load_bytes(skb, off, opt, 2) || opt[1] < 2)
			return 0;
		if (opt[0] == 2 && opt[1] == 4) {
			if (off + 4 > end || bpf_skb_load_bytes(skb, off, opt, 4))
				return 0;
			return (__u32)opt[2] << 8 | opt[3];
		}
		off += opt[1];
	}
	return 0;
}

// Quarantined pods: every packet to or from one is dropped before conntrack and policy, but
// those to an allowed (protocol, destination port) and their replies (the same as source port).
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC); // written by the agent only
	__type(key, __u32);                   // the pod's address, network order
	__type(value, __u32);
} quarantine SEC(".maps");

struct quarantine_port {
	__u8 protocol;
	__u8 pad;
	__u16 port; // network order
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct quarantine_port);
	__type(value, __u32);
} quarantine_allow SEC(".maps");

// SYN rate limits (the threat engine's answer to a SYN flood): toward each limited pod, every
// source gets a token bucket of `rate` new TCP connection attempts per second and `burst`.
// Every bare SYN pays (checked before conntrack, as the iptables dataplane's raw-table rule).
struct syn_limit {
	__u32 rate;
	__u32 burst;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC); // written by the agent only
	__type(key, __u32);                   // the limited pod's address, network order
	__type(value, struct syn_limit);
} syn_limits SEC(".maps");

struct syn_bucket_key {
	__u32 target;
	__u32 source;
};

// tokens are in billionths, so that refilling by elapsed nanoseconds times the rate needs no
// division.
struct syn_bucket {
	__u64 tokens;
	__u64 last_ns;
};

// Sources flooding a pod may be many (spoofed): least recently used buckets make room.
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1 << 16);
	__type(key, struct syn_bucket_key);
	__type(value, struct syn_bucket);
} syn_buckets SEC(".maps");

// The connection-limit shield: the most TCP connections one source may hold open to the pod
// (its rate of new ones is a SYN limit).
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC); // written by the agent only
	__type(key, __u32);                   // the pod's address, network order
	__type(value, __u32);
} conn_limits SEC(".maps");

// Open connections per (pod, source) toward limited pods, counted at the pod's ingress: one up
// when a SYN starts a tracked flow, one down at its first FIN or RST. The agent recounts them
// from conntrack every few seconds (connections that end unseen, counts two CPUs raced on).
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1 << 16);
	__type(key, struct syn_bucket_key);
	__type(value, __u32);
} conn_counts SEC(".maps");

// The blocklist: prefixes whose packets are dropped before conntrack and policy, in either
// direction (threat feeds with action block, automatic blocks). Each entry counts what it
// dropped. Written by the agent only, carried from one generation to the next and pinned.
struct block_key {
	__u32 prefixlen;
	__u32 addr; // network order
};

struct block_value {
	__u64 packets;
	__u64 bytes;
};

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 1 << 20);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct block_key);
	__type(value, struct block_value);
} blocklist SEC(".maps");

// Blocked packets are reported as flow events by sample: at most BLOCK_SAMPLES per CPU in each
// BLOCK_WINDOW_NS, so a flood from a blocked source cannot fill the ring the flow records share.
#define BLOCK_SAMPLES 32
#define BLOCK_WINDOW_NS 100000000ULL

struct block_sample {
	__u64 window; // start of the current window
	__u32 n;      // events written in it
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct block_sample);
} block_samples SEC(".maps");

// Keeps struct flow_event in the BTF, so bpf2go generates it for the reader.
const struct flow_event *unused_flow_event __attribute__((unused));
const enum drop_kind *unused_drop_kind __attribute__((unused));

// Set by the loader: whether flow events are written at all.
volatile const __u32 flow_events_on = 1;

// Offsets in the IPv4 header; the header starts after the Ethernet one in TC programs and at
// the start of the packet in the route (LWT) program.
#define IP_OFF sizeof(struct ethhdr)
#define IP_CSUM offsetof(struct iphdr, check)
#define IP_SRC offsetof(struct iphdr, saddr)
#define IP_DST offsetof(struct iphdr, daddr)
#define IP_CSUM_OFF (IP_OFF + IP_CSUM)

// MARK_HOST_NAT marks a node's own packet the route program sent to a backend, so that the
// backend's veth program tracks the flow as translated and reverses the translation on replies.
#define MARK_HOST_NAT 0x00800000

// SCTP's CRC32c covers the ports (not the addresses). CRC is linear: for packets of equal
// length, crc(new) = crc(old) ^ crc0(old ^ new), where crc0 starts from 0 with no final xor,
// and old ^ new is zero but for the two port bytes. So the update is those two bytes fed into
// a zero register, followed by as many zero bytes as follow them in the packet, which is the
// register multiplied by x^(8n): crc_zeros[k] holds, as 32 columns, the linear map "feed 2^k
// zero bytes" (computed by the loader), so n zero bytes cost one map per bit of n.
#define CRC32C_POLY 0x82f63b78 // reflected Castagnoli

struct crc_op {
	__u32 col[32];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 16); // packets up to 64 KiB
	__type(key, __u32);
	__type(value, struct crc_op);
} crc_zeros SEC(".maps");

// crc_delta is the CRC32c register after feeding the two bytes of d (as they sit in the
// packet) into an empty register and then n zero bytes. A global function: the verifier checks
// it once with unknown arguments, not once per caller and path with values it would follow
// bit by bit; the arithmetic is branch-free.
__attribute__((noinline)) __u32 crc_delta(__u32 d, __u32 n)
{
	__u32 reg = d & 0xffff; // little-endian load: the first byte is the low one
	for (int i = 0; i < 16; i++)
		reg = (reg >> 1) ^ ((reg & 1) * CRC32C_POLY);
	for (__u32 k = 0; k < 16; k++) {
		__u32 key = k;
		struct crc_op *op = bpf_map_lookup_elem(&crc_zeros, &key);
		if (!op)
			return 0;
		__u32 r = 0;
		for (int i = 0; i < 32; i++)
			r ^= op->col[i] * ((reg >> i) & 1);
		__u32 take = (n >> k) & 1;
		reg = r * take + reg * (1 - take);
	}
	return reg;
}

// sctp_port_crc updates the SCTP checksum (at l4 + 8, stored little-endian) for a port that
// changes from old_port to new_port at l4 + port_off; len is the SCTP packet's length.
static __always_inline int sctp_port_crc(struct __sk_buff *skb, __u32 l4, __u32 port_off, __u32 len, __u16 old_port,
					 __u16 new_port)
{
	if (len < port_off + 2)
		return -1;
	__u32 reg = crc_delta((__u16)(old_port ^ new_port), len - port_off - 2);
	__u32 sum;
	if (bpf_skb_load_bytes(skb, l4 + 8, &sum, 4))
		return -1;
	if (!sum)
		return 0; // checksum offload: the stack leaves the field zero for the NIC to fill
	sum ^= reg; // little-endian in the packet, as the host reads it
	return bpf_skb_store_bytes(skb, l4 + 8, &sum, 4, 0);
}

// rewrite replaces an address (at addr_off) and a port (at l4 + port_off) and fixes the IP
// and TCP/UDP checksums, or SCTP's CRC32c when the port changes.
static __always_inline int rewrite(struct __sk_buff *skb, __u32 l3, __u32 l4, __u8 proto, __u32 addr_off, __u32 old_addr,
				   __u32 new_addr, __u32 port_off, __u16 old_port, __u16 new_port)
{
	__u32 csum_off = 0;
	__u64 flags = BPF_F_PSEUDO_HDR;
	if (proto == IPPROTO_TCP)
		csum_off = l4 + 16;
	else if (proto == IPPROTO_UDP) {
		csum_off = l4 + 6;
		flags |= BPF_F_MARK_MANGLED_0;
	}
	if (bpf_l3_csum_replace(skb, l3 + IP_CSUM, old_addr, new_addr, 4))
		return -1;
	if (csum_off) {
		if (bpf_l4_csum_replace(skb, csum_off, old_addr, new_addr, flags | 4))
			return -1;
		if (old_port != new_port &&
		    bpf_l4_csum_replace(skb, csum_off, old_port, new_port, (flags & BPF_F_MARK_MANGLED_0) | 2))
			return -1;
	}
	if (bpf_skb_store_bytes(skb, l3 + addr_off, &new_addr, 4, 0))
		return -1;
	if (old_port != new_port && bpf_skb_store_bytes(skb, l4 + port_off, &new_port, 2, 0))
		return -1;
	if (proto == IPPROTO_SCTP && old_port != new_port) {
		__u16 tot;
		if (bpf_skb_load_bytes(skb, l3 + offsetof(struct iphdr, tot_len), &tot, 2))
			return -1;
		__u32 len = bpf_ntohs(tot);
		if (len < l4 - l3)
			return -1;
		return sctp_port_crc(skb, l4, port_off, len - (l4 - l3), old_port, new_port);
	}
	return 0;
}

// pick_backend chooses a frontend's backend for a flow by a hash of its client, or, with
// session affinity, the one the client used last if it came back within the timeout and the
// backends have not changed since.
static __always_inline struct backend_value *pick_backend(struct svc_value *sv, __u32 saddr, __u16 sport, __u8 proto,
							  __u32 gen)
{
	// Every bit of the client counts (Linux gives connect() even source ports): murmur3's
	// finalizer over the mixed address, port and protocol.
	__u32 h = saddr * 0x9e3779b1 ^ (__u32)sport * 0x85ebca77 ^ proto;
	h ^= h >> 16;
	h *= 0x85ebca6b;
	h ^= h >> 13;
	h *= 0xc2b2ae35;
	h ^= h >> 16;
	struct backend_key bk = {.id = sv->id, .index = h % sv->count};
	if (sv->affinity) {
		__u64 now = bpf_ktime_get_ns();
		struct affinity_key ak = {.client = saddr, .id = sv->id};
		struct affinity_value *av = bpf_map_lookup_elem(&affinity, &ak);
		if (av && av->rev == sv->rev && av->index < sv->count && now - av->last_ns <= (__u64)sv->affinity * 1000000000ULL) {
			av->last_ns = now;
			bk.index = av->index;
		} else {
			struct affinity_value nv = {.last_ns = now, .index = bk.index, .rev = sv->rev};
			bpf_map_update_elem(&affinity, &ak, &nv, BPF_ANY);
		}
	}
	return lookup_in(&backends, gen, &bk);
}

#define DNAT_REFUSE -2

// dnat sends a packet addressed to a Service frontend to one of its backends, remembering the
// frontend for the replies. Returns -1 to drop (no backend, or a rewrite failed).
static __always_inline int dnat(struct __sk_buff *skb, struct iphdr *ip, __u32 l3, __u32 l4, __u16 sport, __u16 dport,
				__u8 tcp_flags, __u32 gen)
{
	__u32 slot = gen & 1;
	struct svc_range *rg = bpf_map_lookup_elem(&service_range, &slot);
	if (!rg || ((ip->daddr & rg->mask) != rg->addr && (ip->daddr & rg->mask2) != rg->addr2))
		return 0;
	struct svc_key sk = {.vip = ip->daddr, .port = dport, .protocol = ip->protocol, .scope = SCOPE_INSIDE};
	struct svc_value *sv = lookup_in(&services, gen, &sk);
	if (!sv)
		return 0;
	__u8 proto = ip->protocol;
	__u32 client = ip->saddr, vip = ip->daddr, backend;
	__u16 bport;
	// A flow keeps the backend it started with (as conntrack keeps kube-proxy's DNAT), even
	// when the backends change; a TCP SYN starts a new one.
	struct nat_out_key ok = {.client = client, .vip = vip, .cport = sport, .vport = dport, .protocol = proto};
	struct nat_out_value *held = NULL;
	if (proto != IPPROTO_TCP || (tcp_flags & (TCP_SYN | TCP_ACK)) != TCP_SYN)
		held = bpf_map_lookup_elem(&nat_out, &ok);
	if (held) {
		backend = held->backend;
		bport = held->bport;
	} else {
		if (!sv->count) {
			count(C_NO_BACKEND);
			// No endpoint at all is refused, as kube-proxy's REJECT; none on this node
			// (internalTrafficPolicy Local) is dropped, as kube-proxy does.
			return sv->flags & SVC_NO_ENDPOINTS ? DNAT_REFUSE : -1;
		}
		struct backend_value *bv = pick_backend(sv, client, sport, proto, gen);
		if (!bv)
			return -1;
		backend = bv->addr;
		bport = bv->port;
		struct nat_out_value nv = {.backend = backend, .bport = bport};
		bpf_map_update_elem(&nat_out, &ok, &nv, BPF_ANY);
	}
	struct revnat_key rk = {.client = client, .backend = backend, .cport = sport, .bport = bport, .protocol = proto};
	struct revnat_value rv = {.vip = vip, .vport = dport};
	// A held flow's reverse entry is there already (a lookup is cheaper than an update), unless
	// it was evicted.
	if (!held || !bpf_map_lookup_elem(&revnat, &rk))
		bpf_map_update_elem(&revnat, &rk, &rv, BPF_ANY);
	if (rewrite(skb, l3, l4, proto, IP_DST, vip, backend, 2, dport, bport))
		return -1;
	count(C_DNAT);
	return 1;
}

// revnat_reply makes a backend's reply come from the frontend the client addressed. Returns
// the translation's flags (enum revnat_flag), or -1 when there was none.
static __always_inline int revnat_reply(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct iphdr *ip = data + sizeof(struct ethhdr);
	if ((void *)(ip + 1) > end)
		return -1;
	__u32 l4 = sizeof(struct ethhdr) + ip->ihl * 4;
	__u16 *ports = data + l4;
	if ((void *)(ports + 2) > end)
		return -1;
	struct revnat_key rk = {.client = ip->daddr, .backend = ip->saddr, .cport = ports[1], .bport = ports[0], .protocol = ip->protocol};
	struct revnat_value *rv = bpf_map_lookup_elem(&revnat, &rk);
	if (!rv)
		return -1;
	struct revnat_value v = *rv;
	if (rewrite(skb, IP_OFF, l4, ip->protocol, IP_SRC, ip->saddr, v.vip, 0, ports[0], v.vport))
		return -1;
	count(C_REVNAT);
	return v.flags;
}

// to_uplink sends a packet out of the node's uplink, its next hop's MAC resolved by the kernel
// (the reply to an outside client, or an outside client's packet for another node's backend).
static __always_inline int to_uplink(void)
{
	__u32 zero = 0;
	struct host_config *hc = bpf_map_lookup_elem(&host, &zero);
	if (!hc || !hc->uplink)
		return TC_ACT_OK; // the node's stack routes it
	return bpf_redirect_neigh(hc->uplink, NULL, 0, 0);
}

// pkt is what policy and conntrack read of a packet (after any per-packet DNAT).
struct pkt {
	__u32 saddr;
	__u32 daddr;
	__u16 sport;
	__u16 dport;
	__u8 proto;
	__u8 ttl;
	__u8 tcp_flags;
	__u8 pad;
	__u32 natflag; // CT_NAT when this packet was translated
	__u32 len;
	__u32 orig_daddr; // before the per-packet DNAT (0: not translated)
	__u16 orig_dport;
	__u16 mss; // a TCP SYN's MSS option, host order (0: none, or not a SYN)
	__u32 gen; // the generation whose tables judge the packet (read once per packet)
};

static __always_inline void emit_event(struct pkt *p, int dir, __u32 allowed, __u32 rule, __u8 blocked)
{
	if (!flow_events_on)
		return;
	struct flow_event ev = {
		.ts_ns = bpf_ktime_get_ns(),
		.generation = p->gen,
		.rule = rule,
		.saddr = p->saddr,
		.daddr = p->daddr,
		.orig_daddr = p->orig_daddr,
		.len = p->len,
		.sport = p->sport,
		.dport = p->dport,
		.orig_dport = p->orig_dport,
		.protocol = p->proto,
		.direction = dir,
		.allowed = allowed,
		.tcp_flags = p->tcp_flags,
		.blocked = blocked,
	};
	// The agent drains the ring on a short timer; waking it per event cost more than the
	// event (a thread wake-up per new connection). A ring filling up still wakes it at once.
	__u64 wake = bpf_ringbuf_query(&flow_events, BPF_RB_AVAIL_DATA) >= FLOW_WAKEUP_BYTES ? BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP;
	if (bpf_ringbuf_output(&flow_events, &ev, sizeof(ev), wake))
		count(C_FLOW_LOST);
}

static __always_inline void emit_flow(struct pkt *p, int dir, __u32 allowed, __u32 rule)
{
	emit_event(p, dir, allowed, rule, 0);
}

// block_match looks both addresses up in the blocklist and counts the packet on the entry
// that matched: 1 when the packet is to be dropped.
static __always_inline int block_match(__u32 saddr, __u32 daddr, __u32 len)
{
	struct block_key k = {.prefixlen = 32, .addr = saddr};
	struct block_value *v = bpf_map_lookup_elem(&blocklist, &k);
	if (!v && daddr != saddr) {
		k.addr = daddr;
		v = bpf_map_lookup_elem(&blocklist, &k);
	}
	if (!v)
		return 0;
	__sync_fetch_and_add(&v->packets, 1);
	__sync_fetch_and_add(&v->bytes, len);
	return 1;
}

// drop_sampled counts a packet dropped without a policy decision and reports it as a flow
// event of that kind, by sample: at most BLOCK_SAMPLES per CPU and window.
static __always_inline void drop_sampled(struct pkt *p, int dir, __u32 counter, __u8 kind)
{
	count(counter);
	__u32 zero = 0;
	struct block_sample *s = bpf_map_lookup_elem(&block_samples, &zero);
	if (!s)
		return;
	__u64 now = bpf_ktime_get_ns();
	if (now - s->window >= BLOCK_WINDOW_NS) {
		s->window = now;
		s->n = 0;
	}
	if (s->n >= BLOCK_SAMPLES)
		return;
	s->n++;
	emit_event(p, dir, 0, 0, kind);
}

// quarantine_drop says whether a packet of a local pod's egress (dir EGRESS: the pod is the
// source) or ingress (the destination) is cut by the pod's quarantine.
static __always_inline int quarantine_drop(struct pkt *p, int dir)
{
	__u32 self = dir == DIR_EGRESS ? p->saddr : p->daddr;
	if (!bpf_map_lookup_elem(&quarantine, &self))
		return 0;
	struct quarantine_port k = {.protocol = p->proto, .port = dir == DIR_EGRESS ? p->dport : p->sport};
	if (p->proto != IPPROTO_TCP && p->proto != IPPROTO_UDP && p->proto != IPPROTO_SCTP)
		return 1;
	return !bpf_map_lookup_elem(&quarantine_allow, &k);
}

#define NS_PER_S 1000000000ULL

// syn_over_limit takes a token from the bucket of the packet's source toward its destination,
// when the destination is limited: 1 when there is none left (drop).
static __always_inline int syn_over_limit(struct pkt *p)
{
	struct syn_limit *l = bpf_map_lookup_elem(&syn_limits, &p->daddr);
	if (!l)
		return 0;
	__u64 cap = (__u64)l->burst * NS_PER_S;
	__u64 now = bpf_ktime_get_ns();
	struct syn_bucket_key k = {.target = p->daddr, .source = p->saddr};
	struct syn_bucket *b = bpf_map_lookup_elem(&syn_buckets, &k);
	if (!b) {
		struct syn_bucket nb = {.tokens = cap > NS_PER_S ? cap - NS_PER_S : 0, .last_ns = now};
		bpf_map_update_elem(&syn_buckets, &k, &nb, BPF_ANY);
		return 0;
	}
	// Concurrent updates from two CPUs may lose a refill or a take: the limit is approximate
	// by a packet or two, never unbounded.
	__u64 elapsed = now - b->last_ns;
	if (elapsed > 1000 * NS_PER_S)
		elapsed = 1000 * NS_PER_S;
	__u64 tokens = b->tokens + elapsed * l->rate;
	if (tokens > cap)
		tokens = cap;
	b->last_ns = now;
	if (tokens < NS_PER_S) {
		b->tokens = tokens;
		return 1;
	}
	b->tokens = tokens - NS_PER_S;
	return 0;
}

// track records a new flow of an endpoint in both directions, counting its first packet. A TCP
// packet that is not a connection's first (no SYN, or a SYN-ACK) is tracked in its own
// direction only: taken for a flow's start, it would admit the other side's packets as its
// replies, and the other side may be the one policy denies (a server retransmitting to a client
// whose connection a policy change just cut and swept). The other side is judged on its own.
static __always_inline void track(struct ct_key *ck, struct pkt *p, __u32 counted)
{
	__u64 now = bpf_ktime_get_ns();
	struct ct_value fwd = {.seen_ns = now, .flags = p->natflag | counted, .packets = 1, .bytes = p->len, .tcp_flags = p->tcp_flags};
	bpf_map_update_elem(&conntrack, ck, &fwd, BPF_ANY);
	if (p->proto == IPPROTO_TCP && (p->tcp_flags & (TCP_SYN | TCP_ACK)) != TCP_SYN)
		return;
	struct ct_value rev = {.seen_ns = now, .flags = p->natflag | CT_REPLY};
	struct ct_key rk = {.endpoint = ck->endpoint, .saddr = ck->daddr, .daddr = ck->saddr, .sport = ck->dport, .dport = ck->sport, .protocol = ck->protocol};
	bpf_map_update_elem(&conntrack, &rk, &rev, BPF_ANY);
}


// conn_over_limit reports whether a connection attempt (a bare SYN at a pod's ingress) would
// take its source past the pod's connection limit (lim: the limit, NULL: none). A count that a
// race between two CPUs took below zero reads as zero until the agent's recount.
static __always_inline int conn_over_limit(struct pkt *p, __u32 *lim)
{
	if (!lim)
		return 0;
	struct syn_bucket_key k = {.target = p->daddr, .source = p->saddr};
	__u32 *n = bpf_map_lookup_elem(&conn_counts, &k);
	return n && *n < 0x80000000 && *n >= *lim;
}

// conn_open counts a connection a SYN opens toward a limited pod, and returns the flag that
// marks its entry as counted (0: not limited).
static __always_inline __u32 conn_open(struct pkt *p, __u32 *lim)
{
	if (!lim)
		return 0;
	struct syn_bucket_key k = {.target = p->daddr, .source = p->saddr};
	__u32 *n = bpf_map_lookup_elem(&conn_counts, &k);
	if (n) {
		__sync_fetch_and_add(n, 1);
	} else {
		__u32 one = 1;
		bpf_map_update_elem(&conn_counts, &k, &one, BPF_ANY);
	}
	return CT_COUNTED;
}

// conn_close takes a counted connection off its source's count at its first FIN or RST, seen
// in either direction at the limited pod (cv: the entry the packet matched, ck: its key).
static __always_inline void conn_close(struct ct_key *ck, struct ct_value *cv)
{
	struct ct_value *fv = cv;
	struct ct_key fk = *ck;
	if (cv->flags & CT_REPLY) {
		fk.saddr = ck->daddr;
		fk.daddr = ck->saddr;
		fk.sport = ck->dport;
		fk.dport = ck->sport;
		fv = bpf_map_lookup_elem(&conntrack, &fk);
		if (!fv)
			return;
	}
	if ((fv->flags & (CT_COUNTED | CT_CLOSED)) != CT_COUNTED)
		return;
	fv->flags |= CT_CLOSED;
	struct syn_bucket_key k = {.target = fk.daddr, .source = fk.saddr};
	__u32 *n = bpf_map_lookup_elem(&conn_counts, &k);
	if (n && *n > 0 && *n < 0x80000000)
		__sync_fetch_and_add(n, -1);
}

#define PARSE_OK 0
#define PARSE_PASS 1 // not ours to judge (not IPv4, or a protocol policy does not speak of)
#define PARSE_DROP 2
#define PARSE_REFUSE 4 // to a Service port without endpoints: answered with port unreachable
#define PARSE_BLOCKED 3 // from or to a blocked prefix: dropped (counted and sampled here)

// parse reads the packet, sending packets from a pod to a Service frontend to a backend first
// (egress only) so that policy sees the backend. Packets from or to a blocked prefix, of any
// protocol, are dropped before anything else (the backend a packet was sent to is checked too).
static __always_inline int parse(struct __sk_buff *skb, int dir, struct pkt *p)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP)) {
		count(C_PASS_NOT_IP);
		return PARSE_PASS;
	}
	struct iphdr *ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > end || ip->ihl < 5) {
		count(C_PASS_NOT_IP);
		return PARSE_PASS;
	}
	__u8 proto = ip->protocol;
	int ported = proto == IPPROTO_TCP || proto == IPPROTO_UDP || proto == IPPROTO_SCTP;
	p->gen = active_gen();
	p->saddr = ip->saddr;
	p->daddr = ip->daddr;
	p->proto = proto;
	p->ttl = ip->ttl;
	p->sport = 0;
	p->dport = 0;
	p->natflag = 0;
	p->orig_daddr = 0;
	p->orig_dport = 0;
	p->tcp_flags = 0;
	p->mss = 0;
	p->len = skb->len;
	// TCP, UDP and SCTP all start with source and destination ports.
	__u16 *ports = (void *)ip + ip->ihl * 4;
	if (ported) {
		if ((void *)(ports + 2) > end)
			return PARSE_DROP;
		p->sport = ports[0];
		p->dport = ports[1];
		if (proto == IPPROTO_TCP) {
			__u8 *fl = (void *)ports + 13; // the flags byte of the TCP header
			if ((void *)(fl + 1) <= end)
				p->tcp_flags = *fl;
			if (p->tcp_flags & TCP_SYN)
				p->mss = tcp_syn_mss(skb, (void *)ports - data);
		}
	}
	if (block_match(p->saddr, p->daddr, p->len)) {
		drop_sampled(p, dir, C_DROP_BLOCKED, DROP_BLOCKLIST);
		return PARSE_BLOCKED;
	}
	if (!ported) {
		// Policy speaks of TCP, UDP and SCTP only; a quarantine cuts everything.
		if (quarantine_drop(p, dir)) {
			drop_sampled(p, dir, C_DROP_QUARANTINE, DROP_QUARANTINE);
			return PARSE_BLOCKED;
		}
		count(C_PASS_OTHER_PROTO);
		return PARSE_PASS;
	}
	__u32 daddr0 = ip->daddr;
	if (dir == DIR_EGRESS) {
		int nat = dnat(skb, ip, IP_OFF, (void *)ports - data, p->sport, p->dport, p->tcp_flags, p->gen);
		if (nat == DNAT_REFUSE)
			return PARSE_REFUSE;
		if (nat < 0)
			return PARSE_DROP;
		if (nat > 0) { // the packet changed: read it again
			p->natflag = CT_NAT;
			p->orig_daddr = daddr0;
			p->orig_dport = p->dport;
			data = (void *)(long)skb->data;
			end = (void *)(long)skb->data_end;
			ip = data + sizeof(struct ethhdr);
			if ((void *)(ip + 1) > end)
				return PARSE_DROP;
			ports = (void *)ip + ip->ihl * 4;
			if ((void *)(ports + 2) > end)
				return PARSE_DROP;
			p->dport = ports[1];
			p->daddr = ip->daddr;
			if (block_match(p->daddr, p->daddr, p->len)) {
				drop_sampled(p, dir, C_DROP_BLOCKED, DROP_BLOCKLIST);
				return PARSE_BLOCKED;
			}
		}
	}
	return PARSE_OK;
}

// judge decides a packet for one local endpoint in one direction: a tracked flow passes, a
// new one is looked up in the policy and tracked when allowed.
static __always_inline int judge(struct endpoint *ep, struct pkt *p, int dir, __u32 *ctflags)
{
	// A quarantine cuts the pod's established connections too: before conntrack.
	if (quarantine_drop(p, dir)) {
		drop_sampled(p, dir, C_DROP_QUARANTINE, DROP_QUARANTINE);
		return TC_ACT_SHOT;
	}
	// A shield's virtual patch: a SYN toward the pod with too small an MSS (SACK Panic).
	if (dir == DIR_INGRESS && p->mss) {
		struct shield *sh = bpf_map_lookup_elem(&shields, &p->daddr);
		if (sh && p->mss < sh->min_mss) {
			drop_sampled(p, dir, C_DROP_SHIELD, DROP_SHIELD);
			return TC_ACT_SHOT;
		}
	}
	// A connection attempt toward a rate-limited pod needs a token of its source, whatever
	// policy says, and before conntrack: a SYN reusing a tracked flow's ports (a flood cycling
	// through source ports does) is a new attempt too.
	if (dir == DIR_INGRESS && p->proto == IPPROTO_TCP && (p->tcp_flags & (TCP_SYN | TCP_ACK)) == TCP_SYN &&
	    syn_over_limit(p)) {
		drop_sampled(p, dir, C_DROP_SYN_LIMIT, DROP_SYN_LIMIT);
		return TC_ACT_SHOT;
	}
	struct ct_key ck = {.endpoint = ep->id, .saddr = p->saddr, .daddr = p->daddr, .sport = p->sport, .dport = p->dport, .protocol = p->proto};
	struct ct_value *cv = bpf_map_lookup_elem(&conntrack, &ck);
	if (cv) {
		cv->seen_ns = bpf_ktime_get_ns();
		__sync_fetch_and_add(&cv->packets, 1);
		__sync_fetch_and_add(&cv->bytes, p->len);
		if ((cv->tcp_flags | p->tcp_flags) != cv->tcp_flags)
			cv->tcp_flags |= p->tcp_flags;
		if (p->tcp_flags & (TCP_FIN | TCP_RST))
			conn_close(&ck, cv);
		*ctflags = cv->flags;
		count(C_PASS_CT);
		return TC_ACT_OK;
	}
	// A new connection toward a pod whose sources may hold only so many open.
	__u32 *climit = NULL;
	if (dir == DIR_INGRESS && p->proto == IPPROTO_TCP && (p->tcp_flags & (TCP_SYN | TCP_ACK)) == TCP_SYN) {
		climit = bpf_map_lookup_elem(&conn_limits, &p->daddr);
		if (conn_over_limit(p, climit)) {
			drop_sampled(p, dir, C_DROP_SHIELD, DROP_CONN_LIMIT);
			return TC_ACT_SHOT;
		}
	}

	// Every flow of a local endpoint is tracked, policed or not: its replies come back in the
	// other direction, which may be policed, and must not be judged as new flows.
	__u32 flag = dir == DIR_EGRESS ? EP_SELECTED_EGRESS : EP_SELECTED_INGRESS;
	if (!(ep->flags & flag)) {
		track(&ck, p, conn_open(p, climit));
		emit_flow(p, dir, 1, 0);
		count(C_PASS_NOT_SELECTED);
		return TC_ACT_OK;
	}

	struct ipcache_key ik = {.prefixlen = 32, .addr = dir == DIR_EGRESS ? p->daddr : p->saddr};
	__u32 *identity = lookup_in(&ipcache, p->gen, &ik);
	struct policy_key pk = {
		.prefixlen = 96,
		.endpoint = ep->id,
		.identity = identity ? *identity : 0,
		.protocol = p->proto,
		.direction = dir,
		.port = p->dport,
	};
	struct policy_value *pv = lookup_in(&policy, p->gen, &pk);
	if (!pv || !pv->allow) {
		emit_flow(p, dir, 0, pv ? pv->rule : 0);
		count(dir == DIR_EGRESS ? C_DROP_EGRESS : C_DROP_INGRESS);
		return TC_ACT_SHOT;
	}
	track(&ck, p, conn_open(p, climit));
	emit_flow(p, dir, 1, pv->rule);
	count(dir == DIR_EGRESS ? C_ALLOW_EGRESS : C_ALLOW_INGRESS);
	return TC_ACT_OK;
}

// deliver hands a packet from a local pod or from the uplink straight to a local pod (dst, the
// endpoint of its destination address): the destination's ingress is judged here, and bpf_redirect_peer puts the packet into the
// destination pod's namespace, skipping the node's routing and the veth crossing. Returns -1
// when the packet must take the ordinary path instead (the caller then passes it on).
static __always_inline int deliver(struct __sk_buff *skb, __u32 from_ifindex, struct endpoint *dst, struct pkt *p)
{
	if (!(dst->flags & EP_FAST) || dst->ifindex == from_ifindex || p->ttl <= 1)
		return -1; // no MAC known, hairpin, or TTL to be reported by the stack
	__u32 ctflags = 0;
	if (judge(dst, p, DIR_INGRESS, &ctflags) != TC_ACT_OK)
		return TC_ACT_SHOT;
	if (nat_reply(ctflags))
		revnat_reply(skb);
	// A routed hop: the node's MAC as source, the pod's as destination, TTL one less.
	__u16 old = bpf_htons((__u16)p->ttl << 8), new = bpf_htons((__u16)(p->ttl - 1) << 8);
	__u8 ttl = p->ttl - 1;
	if (bpf_l3_csum_replace(skb, IP_CSUM_OFF, old, new, 2) ||
	    bpf_skb_store_bytes(skb, IP_OFF + offsetof(struct iphdr, ttl), &ttl, 1, 0) ||
	    bpf_skb_store_bytes(skb, offsetof(struct ethhdr, h_dest), dst->mac, ETH_ALEN, 0) ||
	    bpf_skb_store_bytes(skb, offsetof(struct ethhdr, h_source), dst->host_mac, ETH_ALEN, 0))
		return TC_ACT_SHOT;
	count(from_ifindex ? C_REDIRECT_PEER : C_REDIRECT_UPLINK);
	return bpf_redirect_peer(dst->ifindex, 0);
}

// back_into_pod hands a packet from a pod straight back to it, as a routed hop from the node.
static __always_inline int back_into_pod(struct __sk_buff *skb, struct endpoint *ep)
{
	if (!(ep->flags & EP_FAST) || !ep->ifindex ||
	    bpf_skb_store_bytes(skb, offsetof(struct ethhdr, h_dest), ep->mac, ETH_ALEN, 0) ||
	    bpf_skb_store_bytes(skb, offsetof(struct ethhdr, h_source), ep->host_mac, ETH_ALEN, 0))
		return TC_ACT_SHOT;
	return bpf_redirect(ep->ifindex, 0);
}

// fold16 folds a 32-bit one's complement sum into a checksum.
static __always_inline __u16 fold16(__s64 sum)
{
	__u32 s = (__u32)sum;
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return (__u16)~s;
}

// port_unreachable turns a packet into the ICMP port unreachable its sender gets from a
// refusing host: from the address it sent to, carrying its IP header and first 8 bytes.
// Returns nonzero when the packet cannot be turned (then it is dropped).
struct icmp_refusal {
	struct iphdr ip;
	__u8 type, code;
	__u16 csum;
	__u32 unused;
	__u8 orig[28]; // the original IP header (no options) and 8 bytes of its payload
};
_Static_assert(sizeof(struct icmp_refusal) == 56, "no padding: the packet is the struct");

static __always_inline int port_unreachable(struct __sk_buff *skb, struct pkt *p)
{
	struct icmp_refusal m = {};
	if (bpf_skb_load_bytes(skb, IP_OFF, m.orig, sizeof(m.orig)))
		return -1;
	if ((m.orig[0] & 0x0f) != 5)
		return -1; // IP options: not answered
	__u32 dst = p->saddr, src = p->daddr; // refused before any translation
	m.ip.version = 4;
	m.ip.ihl = 5;
	m.ip.tot_len = bpf_htons(sizeof(m));
	m.ip.ttl = 64;
	m.ip.protocol = IPPROTO_ICMP;
	m.ip.saddr = src;
	m.ip.daddr = dst;
	m.type = 3; // destination unreachable
	m.code = 3; // port unreachable
	m.ip.check = fold16(bpf_csum_diff(NULL, 0, (__be32 *)&m.ip, sizeof(m.ip), 0));
	m.csum = fold16(bpf_csum_diff(NULL, 0, (__be32 *)&m.type, sizeof(m) - sizeof(m.ip), 0));
	if (bpf_skb_change_tail(skb, IP_OFF + sizeof(m), 0) || bpf_skb_store_bytes(skb, IP_OFF, &m, sizeof(m), 0))
		return -1;
	return 0;
}

// endpoint_of parses a packet on a pod's veth and finds the local endpoint it is judged for:
// its source leaving the pod (egress), its destination entering it (ingress). Returns -1 with
// *ep set to go on, or the TC action for the packet: not ours, or an address that does not
// belong on this interface (a pod sending with another pod's address, or routing gone wrong).
static __always_inline int endpoint_of(struct __sk_buff *skb, int dir, struct pkt *p, struct endpoint **ep)
{
	int r = parse(skb, dir, p);
	if (r == PARSE_REFUSE) {
		// Refused before policy, as kube-proxy's REJECT in the filter table's first chain.
		struct endpoint *src = lookup_in(&endpoints, p->gen, &p->saddr);
		if (!src || (src->ifindex && src->ifindex != skb->ifindex) || port_unreachable(skb, p))
			return TC_ACT_SHOT;
		return back_into_pod(skb, src);
	}
	if (r != PARSE_OK)
		return r == PARSE_PASS ? TC_ACT_OK : TC_ACT_SHOT;
	__u32 addr = dir == DIR_EGRESS ? p->saddr : p->daddr;
	*ep = lookup_in(&endpoints, p->gen, &addr);
	if (!*ep) {
		count(C_PASS_NO_ENDPOINT);
		return TC_ACT_OK;
	}
	if ((*ep)->ifindex && (*ep)->ifindex != skb->ifindex) {
		count(C_DROP_SPOOF);
		return TC_ACT_SHOT;
	}
	return -1;
}

// HAIRPIN_ADDR (169.254.42.1) stands for the client of a pod that reached itself through its
// Service per packet: the backend (the pod itself) would answer its own address inside the
// pod, where nothing reverses the translation, so the packet arrives from this address
// instead, and the answer comes back out through the veth to be translated back.
#define HAIRPIN_ADDR bpf_htonl(0xa9fe2a01)

// hairpin sends a pod's packet, translated to the pod itself, back into it from HAIRPIN_ADDR.
static __always_inline int hairpin(struct __sk_buff *skb, struct endpoint *ep, struct pkt *p)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct iphdr *ip = data + sizeof(struct ethhdr);
	if ((void *)(ip + 1) > end)
		return TC_ACT_SHOT;
	if (rewrite(skb, IP_OFF, IP_OFF + ip->ihl * 4, p->proto, IP_SRC, p->saddr, HAIRPIN_ADDR, 0, p->sport, p->sport))
		return TC_ACT_SHOT;
	return back_into_pod(skb, ep);
}

// hairpin_reply translates a pod's answer to HAIRPIN_ADDR back into the reply its own client
// expects: from the frontend it addressed, to itself.
static __always_inline int hairpin_reply(struct __sk_buff *skb, struct endpoint *ep, struct pkt *p)
{
	struct revnat_key rk = {.client = p->saddr, .backend = p->saddr, .cport = p->dport, .bport = p->sport, .protocol = p->proto};
	struct revnat_value *rv = bpf_map_lookup_elem(&revnat, &rk);
	if (!rv)
		return TC_ACT_SHOT;
	struct revnat_value v = *rv;
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct iphdr *ip = data + sizeof(struct ethhdr);
	if ((void *)(ip + 1) > end)
		return TC_ACT_SHOT;
	__u32 l4 = IP_OFF + ip->ihl * 4;
	if (rewrite(skb, IP_OFF, l4, p->proto, IP_SRC, p->saddr, v.vip, 0, p->sport, v.vport) ||
	    rewrite(skb, IP_OFF, l4, p->proto, IP_DST, HAIRPIN_ADDR, p->saddr, 2, p->dport, p->dport))
		return TC_ACT_SHOT;
	count(C_REVNAT);
	return back_into_pod(skb, ep);
}

SEC("tc")
int from_pod(struct __sk_buff *skb)
{
	struct pkt p;
	struct endpoint *ep;
	int r = endpoint_of(skb, DIR_EGRESS, &p, &ep);
	if (r >= 0)
		return r;
	if (p.daddr == HAIRPIN_ADDR && p.proto != IPPROTO_ICMP)
		return hairpin_reply(skb, ep, &p);
	__u32 ctflags = 0;
	if (judge(ep, &p, DIR_EGRESS, &ctflags) != TC_ACT_OK)
		return TC_ACT_SHOT;
	// A pod that reached itself through its Service (the pod's own ingress is not judged: a
	// pod may always reach itself, as on its loopback).
	if (p.natflag && p.daddr == p.saddr)
		return hairpin(skb, ep, &p);
	struct endpoint *dst;
	if (ep->ifindex && (dst = lookup_in(&endpoints, p.gen, &p.daddr))) {
		r = deliver(skb, ep->ifindex, dst, &p);
		if (r >= 0)
			return r;
	}
	// A reply to a flow translated on its way in: the node's own (MARK_HOST_NAT), a local
	// pod's that could not be handed over directly (its to_pod then finds nothing to reverse),
	// or a client's outside the node, sent straight out of the uplink: its source is now a
	// frontend address, perhaps the node's own, which the node's stack would take for a
	// martian arriving from a pod.
	if (nat_reply(ctflags)) {
		int rn = revnat_reply(skb);
		if (rn > 0 && (rn & RN_OUTSIDE))
			return to_uplink();
	}
	return TC_ACT_OK;
}

SEC("tc")
int to_pod(struct __sk_buff *skb)
{
	struct pkt p;
	struct endpoint *ep;
	int r = endpoint_of(skb, DIR_INGRESS, &p, &ep);
	if (r >= 0)
		return r;
	if (skb->mark & MARK_HOST_NAT)
		p.natflag = CT_NAT;
	__u32 ctflags = 0;
	if (judge(ep, &p, DIR_INGRESS, &ctflags) != TC_ACT_OK)
		return TC_ACT_SHOT;
	if (nat_reply(ctflags))
		revnat_reply(skb);
	return TC_ACT_OK;
}

// svc_xmit is the route program (LWT xmit) of the Service range in the node's own namespace:
// the node's packets to a frontend that no socket hook translated (raw sockets such as SCTP's,
// processes outside the hooked cgroup) go to a backend here and are routed again.
SEC("lwt_xmit")
int svc_xmit(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct iphdr *ip = data;
	if ((void *)(ip + 1) > end || ip->version != 4 || ip->ihl < 5)
		return BPF_OK;
	__u8 proto = ip->protocol;
	if (proto != IPPROTO_TCP && proto != IPPROTO_UDP && proto != IPPROTO_SCTP)
		return BPF_OK;
	__u16 *ports = (void *)ip + ip->ihl * 4;
	if ((void *)(ports + 2) > end)
		return BPF_OK;
	__u8 flags = 0;
	__u8 *fl = (void *)ports + 13; // the flags byte of the TCP header
	if (proto == IPPROTO_TCP && (void *)(fl + 1) <= end)
		flags = *fl;
	int nat = dnat(skb, ip, 0, (void *)ports - data, ports[0], ports[1], flags, active_gen());
	if (nat < 0)
		return BPF_DROP;
	if (nat == 0)
		return BPF_OK;
	skb->mark |= MARK_HOST_NAT;
	return BPF_LWT_REROUTE;
}

#define NAT_PORT_TRIES 8
#define UPLINK_LOCAL -2

// snat_port picks the port an outside client's flow leaves with toward a remote backend: the
// client's own where no other flow holds it toward that backend, else one of a few others
// derived from the flow.
static __always_inline __u16 snat_port(struct nat_back_key *bk, struct nat_back_value *bv)
{
	__u32 h = bv->client ^ ((__u32)bv->cport << 16) ^ bv->vip;
	for (int i = 0; i < NAT_PORT_TRIES; i++) {
		struct nat_back_value *held = bpf_map_lookup_elem(&nat_back, bk);
		if (!held || (held->client == bv->client && held->cport == bv->cport))
			return bk->natport;
		h = h * 0x45d9f3b + 0x9e3779b9;
		bk->natport = bpf_htons(32768 + (h >> 8) % 28000);
	}
	return 0;
}

// uplink_dnat translates a packet from outside the cluster addressed to a frontend reached
// from outside (a node port on this node's address, an external or load-balancer address)
// toward a backend. A local backend gets the packet with the client's address (the caller
// delivers it: *local set); a remote one, with externalTrafficPolicy: Cluster, gets it from
// the node's address (SNAT) and it leaves by the uplink here. Returns -1 when the packet is no
// frontend's, UPLINK_LOCAL when translated to a local backend, or the TC action.
static __always_inline int uplink_dnat(struct __sk_buff *skb, struct pkt *p)
{
	if (p->proto != IPPROTO_TCP && p->proto != IPPROTO_UDP && p->proto != IPPROTO_SCTP)
		return -1;
	struct nat_out_key ok = {.client = p->saddr, .vip = p->daddr, .cport = p->sport, .vport = p->dport, .protocol = p->proto};
	struct nat_out_value nv;
	struct nat_out_value *held = NULL;
	if (p->proto != IPPROTO_TCP || (p->tcp_flags & (TCP_SYN | TCP_ACK)) != TCP_SYN)
		held = bpf_map_lookup_elem(&nat_out, &ok); // a flow keeps its backend; a SYN starts anew
	__u32 zero = 0;
	struct host_config *hc = bpf_map_lookup_elem(&host, &zero);
	if (!hc)
		return -1;
	if (held) {
		nv = *held;
	} else {
		struct svc_key sk = {.vip = p->daddr, .port = p->dport, .protocol = p->proto, .scope = SCOPE_OUTSIDE};
		struct svc_value *sv = lookup_in(&services, p->gen, &sk);
		if (!sv)
			return -1;
		if (!sv->count) {
			count(C_NO_BACKEND);
			// Without any endpoint, refused as kube-proxy's REJECT: a node port by the node's
			// stack (RST, port unreachable), an external or load-balancer address here. With
			// endpoints on other nodes only (externalTrafficPolicy Local): dropped.
			if (!(sv->flags & SVC_NO_ENDPOINTS))
				return TC_ACT_SHOT;
			if (sv->flags & SVC_NODEPORT)
				return TC_ACT_OK;
			return port_unreachable(skb, p) ? TC_ACT_SHOT : to_uplink();
		}
		struct backend_value *bv = pick_backend(sv, p->saddr, p->sport, p->proto, p->gen);
		if (!bv)
			return TC_ACT_SHOT;
		nv.backend = bv->addr;
		nv.bport = bv->port;
		nv.natport = 0;
		if (!(sv->flags & SVC_LOCAL) && !lookup_in(&endpoints, p->gen, &bv->addr)) {
			struct nat_back_key bk = {.backend = nv.backend, .bport = nv.bport, .natport = p->sport, .protocol = p->proto};
			struct nat_back_value back = {.client = p->saddr, .vip = p->daddr, .cport = p->sport, .vport = p->dport};
			nv.natport = snat_port(&bk, &back);
			if (!nv.natport)
				return TC_ACT_SHOT; // every port tried is taken
			bpf_map_update_elem(&nat_back, &bk, &back, BPF_ANY);
		}
		bpf_map_update_elem(&nat_out, &ok, &nv, BPF_ANY);
	}
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct iphdr *ip = data + sizeof(struct ethhdr);
	if ((void *)(ip + 1) > end)
		return TC_ACT_SHOT;
	__u32 l4 = IP_OFF + ip->ihl * 4;
	if (rewrite(skb, IP_OFF, l4, p->proto, IP_DST, p->daddr, nv.backend, 2, p->dport, nv.bport))
		return TC_ACT_SHOT;
	count(C_DNAT_OUTSIDE);
	if (nv.natport) {
		if (rewrite(skb, IP_OFF, l4, p->proto, IP_SRC, p->saddr, hc->addr, 0, p->sport, nv.natport))
			return TC_ACT_SHOT;
		count(C_SNAT_OUTSIDE);
		return bpf_redirect_neigh(hc->uplink, NULL, 0, 0);
	}
	struct revnat_key rk = {.client = p->saddr, .backend = nv.backend, .cport = p->sport, .bport = nv.bport, .protocol = p->proto};
	struct revnat_value rv = {.vip = p->daddr, .vport = p->dport, .flags = RN_OUTSIDE};
	if (!held || !bpf_map_lookup_elem(&revnat, &rk)) // as in dnat
		bpf_map_update_elem(&revnat, &rk, &rv, BPF_ANY);
	p->orig_daddr = p->daddr;
	p->orig_dport = p->dport;
	p->daddr = nv.backend;
	p->dport = nv.bport;
	p->natflag = CT_NAT;
	skb->mark |= MARK_HOST_NAT; // for to_pod, should the packet take the node's path
	return UPLINK_LOCAL;
}

// nat_back_reply sends a remote backend's reply to an outside client's SNATed flow back to the
// client, from the frontend it addressed. Returns -1 when the packet is no such reply.
static __always_inline int nat_back_reply(struct __sk_buff *skb, struct pkt *p)
{
	if (p->proto != IPPROTO_TCP && p->proto != IPPROTO_UDP && p->proto != IPPROTO_SCTP)
		return -1;
	struct nat_back_key bk = {.backend = p->saddr, .bport = p->sport, .natport = p->dport, .protocol = p->proto};
	struct nat_back_value *bv = bpf_map_lookup_elem(&nat_back, &bk);
	if (!bv)
		return -1;
	__u32 zero = 0;
	struct host_config *hc = bpf_map_lookup_elem(&host, &zero);
	if (!hc || hc->addr != p->daddr)
		return -1;
	struct nat_back_value v = *bv;
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct iphdr *ip = data + sizeof(struct ethhdr);
	if ((void *)(ip + 1) > end)
		return TC_ACT_SHOT;
	__u32 l4 = IP_OFF + ip->ihl * 4;
	if (rewrite(skb, IP_OFF, l4, p->proto, IP_SRC, p->saddr, v.vip, 0, p->sport, v.vport) ||
	    rewrite(skb, IP_OFF, l4, p->proto, IP_DST, p->daddr, v.client, 2, p->dport, v.cport))
		return TC_ACT_SHOT;
	count(C_NAT_BACK);
	return bpf_redirect_neigh(hc->uplink, NULL, 0, 0);
}

// from_uplink, on TC ingress of the node's link to the other nodes, hands packets for local
// pods straight to them (judging their ingress, as to_pod would), translates traffic from
// outside to its frontends' backends, and reverses translations for replies: svc_xmit's from
// backends on other nodes, and the SNAT of outside flows.
SEC("tc")
int from_uplink(struct __sk_buff *skb)
{
	struct pkt p;
	int r = parse(skb, DIR_INGRESS, &p);
	if (r == PARSE_BLOCKED)
		return TC_ACT_SHOT; // when no XDP program is attached, or it was replaced
	if (r != PARSE_OK)
		return TC_ACT_OK; // to_pod judges whatever reaches a pod
	struct endpoint *dst = lookup_in(&endpoints, p.gen, &p.daddr);
	if (!dst) {
		r = nat_back_reply(skb, &p);
		if (r >= 0)
			return r;
		r = uplink_dnat(skb, &p);
		if (r >= 0)
			return r;
		if (r != UPLINK_LOCAL) {
			revnat_reply(skb);
			return TC_ACT_OK;
		}
		dst = lookup_in(&endpoints, p.gen, &p.daddr);
		if (!dst)
			return TC_ACT_SHOT;
	}
	r = deliver(skb, 0, dst, &p);
	return r >= 0 ? r : TC_ACT_OK;
}

// xdp_uplink drops packets from or to a blocked prefix as they arrive from the other nodes,
// before the kernel builds a socket buffer, conntrack or routing sees them.
SEC("xdp")
int xdp_uplink(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP))
		return XDP_PASS;
	struct iphdr *ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > end || ip->ihl < 5)
		return XDP_PASS;
	__u32 len = end - data;
	if (!block_match(ip->saddr, ip->daddr, len))
		return XDP_PASS;
	struct pkt p = {.saddr = ip->saddr, .daddr = ip->daddr, .proto = ip->protocol, .len = len, .gen = active_gen()};
	__u8 proto = ip->protocol;
	__u16 *ports = (void *)ip + ip->ihl * 4;
	if ((proto == IPPROTO_TCP || proto == IPPROTO_UDP || proto == IPPROTO_SCTP) && (void *)(ports + 2) <= end) {
		p.sport = ports[0];
		p.dport = ports[1];
		__u8 *fl = (void *)ports + 13;
		if (proto == IPPROTO_TCP && (void *)(fl + 1) <= end)
			p.tcp_flags = *fl;
	}
	drop_sampled(&p, DIR_INGRESS, C_XDP_DROP_BLOCKED, DROP_BLOCKLIST);
	return XDP_DROP;
}

char __license[] SEC("license") = "Dual BSD/GPL";
