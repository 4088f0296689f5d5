// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// Connect-time Service load balancing in cgroup socket hooks (docs/ebpf-design.md).
//   connect4:     TCP and connected UDP: the socket connects straight to a backend.
//   sendmsg4:     unconnected UDP: each datagram to a frontend goes to a backend.
//   recvmsg4:     UDP replies appear to come from the frontend the client addressed.
//   getpeername4: the socket's peer reads as the frontend.
//   sockops:      when a translated TCP socket opens (its source port now known), the frontend
//                 it addressed is noted by the connection's addresses, so the agent's flow
//                 records name the Service (lb_flows).
//   udp_egress:   likewise for UDP, on a translated socket's datagrams as they leave (cgroup
//                 skb egress: UDP has no open event, and its source port is chosen after
//                 connect4 and sendmsg4 ran).
// Packets then carry the backend address from the start, so the veth programs decide policy on
// the backend and need no per-packet NAT. Every socket created in the cgroup the programs are
// attached to (or below it) is translated: on a node that is the root, in the lab the lab's
// cgroup, whose children are its pods.
#include <linux/bpf.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>

struct lb_svc_key {
	__u32 vip;  // network order
	__u16 port; // network order
	__u8 protocol;
	__u8 pad;
};

struct lb_svc_value {
	__u32 id;       // changes with the backends
	__u32 count;    // backends
	__u32 affinity; // sessionAffinity ClientIP's timeout in seconds (0: none)
};

// Session affinity: the backend a client (a network namespace: a pod) used last, per frontend.
struct lb_affinity_key {
	__u64 netns;
	struct lb_svc_key svc;
};

struct lb_affinity_value {
	__u64 last_ns;
	__u32 index;
	__u32 id; // the frontend's backends it was chosen among
};

struct lb_backend_key {
	__u32 id;
	__u32 index;
};

struct lb_backend_value {
	__u32 addr;
	__u16 port;
	__u16 pad;
};

// The frontend a socket addressed, by socket and backend.
struct lb_revnat_key {
	__u64 cookie;
	__u32 backend;
	__u16 port;
	__u16 pad;
};

struct lb_revnat_value {
	__u32 vip;
	__u16 port;
	__u16 pad;
};

// A translated TCP connection, as the veth programs see its packets.
struct lb_flow_key {
	__u32 saddr; // network order
	__u32 daddr; // the backend, network order
	__u16 sport; // network order
	__u16 dport; // network order
};

enum lb_counter {
	LB_CONNECT,
	LB_SENDMSG,
	LB_RECVMSG,
	LB_GETPEERNAME,
	LB_NO_BACKEND,
	LB_MAX,
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC); // written by the agent only: memory as used, not as sized
	__type(key, struct lb_svc_key);
	__type(value, struct lb_svc_value);
} lb_services SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1 << 20);
	__uint(map_flags, BPF_F_NO_PREALLOC); // written by the agent only: memory as used, not as sized
	__type(key, struct lb_backend_key);
	__type(value, struct lb_backend_value);
} lb_backends SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1 << 18);
	__type(key, struct lb_revnat_key);
	__type(value, struct lb_revnat_value);
} lb_revnat SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1 << 16); // LRU maps are preallocated: memory the agent's limit counts
	__type(key, struct lb_affinity_key);
	__type(value, struct lb_affinity_value);
} lb_affinity SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1 << 18);
	__type(key, struct lb_flow_key);
	__type(value, struct lb_revnat_value);
} lb_flows SEC(".maps");

// Node network namespaces, by cookie: their sockets reach node ports on 127.0.0.0/8 as well
// (kube-proxy's localhost node ports). A pod's loopback is its own, and is left alone.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, __u64);
	__type(value, __u8);
} lb_host_netns SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, LB_MAX);
	__type(key, __u32);
	__type(value, __u64);
} lb_counters SEC(".maps");

// refuse_with_errno is set at load where the kernel has bpf_set_retval (5.18+): a connection to
// a Service port without endpoints then fails with ECONNREFUSED, as kube-proxy's REJECT makes
// it; without it the hook's refusal is EPERM. Dead code is not verified, so older kernels load
// the programs too.
volatile const __u8 refuse_with_errno = 0;

#define ECONNREFUSED 111
#define LOOPBACK_VIP 0x0100007f // 127.0.0.1, network order

static __always_inline void lb_count(__u32 c)
{
	__u64 *v = bpf_map_lookup_elem(&lb_counters, &c);
	if (v)
		*v += 1;
}

// translate points the socket address at a backend of the frontend it names. Returns 0 to
// refuse the operation (a frontend without backends), 1 otherwise.
static __always_inline int translate(struct bpf_sock_addr *ctx, __u32 counter)
{
	if (ctx->protocol != IPPROTO_TCP && ctx->protocol != IPPROTO_UDP)
		return 1;
	struct lb_svc_key sk = {.vip = ctx->user_ip4, .port = (__u16)ctx->user_port, .protocol = (__u8)ctx->protocol};
	if ((sk.vip & 0xff) == 127) { // 127.0.0.0/8 (network order, first byte lowest)
		__u64 ns = bpf_get_netns_cookie(ctx);
		if (!bpf_map_lookup_elem(&lb_host_netns, &ns))
			return 1;
		sk.vip = LOOPBACK_VIP; // node ports are listed once, on 127.0.0.1
	}
	struct lb_svc_value *sv = bpf_map_lookup_elem(&lb_services, &sk);
	if (!sv)
		return 1;
	if (!sv->count) {
		lb_count(LB_NO_BACKEND);
		if (refuse_with_errno)
			bpf_set_retval(-ECONNREFUSED);
		return 0;
	}
	struct lb_backend_key bk = {.id = sv->id, .index = bpf_get_prandom_u32() % sv->count};
	if (sv->affinity) {
		// The client is the socket's network namespace (a pod's): its address is not
		// known before the socket is bound.
		__u64 now = bpf_ktime_get_ns();
		struct lb_affinity_key ak = {.netns = bpf_get_netns_cookie(ctx), .svc = sk};
		struct lb_affinity_value *av = bpf_map_lookup_elem(&lb_affinity, &ak);
		if (av && av->id == sv->id && av->index < sv->count && now - av->last_ns <= (__u64)sv->affinity * 1000000000ULL) {
			av->last_ns = now;
			bk.index = av->index;
		} else {
			struct lb_affinity_value nv = {.last_ns = now, .index = bk.index, .id = sv->id};
			bpf_map_update_elem(&lb_affinity, &ak, &nv, BPF_ANY);
		}
	}
	struct lb_backend_value *bv = bpf_map_lookup_elem(&lb_backends, &bk);
	if (!bv)
		return 1;
	struct lb_revnat_key rk = {.cookie = bpf_get_socket_cookie(ctx), .backend = bv->addr, .port = bv->port};
	struct lb_revnat_value rv = {.vip = ctx->user_ip4, .port = sk.port}; // the address as addressed
	bpf_map_update_elem(&lb_revnat, &rk, &rv, BPF_ANY);
	ctx->user_ip4 = bv->addr;
	ctx->user_port = bv->port;
	lb_count(counter);
	return 1;
}

// restore shows the frontend instead of the backend a reply or peer address names.
static __always_inline int restore(struct bpf_sock_addr *ctx, __u32 counter)
{
	struct lb_revnat_key rk = {.cookie = bpf_get_socket_cookie(ctx), .backend = ctx->user_ip4, .port = (__u16)ctx->user_port};
	struct lb_revnat_value *rv = bpf_map_lookup_elem(&lb_revnat, &rk);
	if (!rv)
		return 1;
	ctx->user_ip4 = rv->vip;
	ctx->user_port = rv->port;
	lb_count(counter);
	return 1;
}

SEC("cgroup/connect4")
int lb_connect4(struct bpf_sock_addr *ctx)
{
	return translate(ctx, LB_CONNECT);
}

SEC("cgroup/sendmsg4")
int lb_sendmsg4(struct bpf_sock_addr *ctx)
{
	return translate(ctx, LB_SENDMSG);
}

SEC("cgroup/recvmsg4")
int lb_recvmsg4(struct bpf_sock_addr *ctx)
{
	return restore(ctx, LB_RECVMSG);
}

SEC("cgroup/getpeername4")
int lb_getpeername4(struct bpf_sock_addr *ctx)
{
	return restore(ctx, LB_GETPEERNAME);
}

// lb_sockops notes the frontend of a TCP connection connect4 translated, once the kernel has
// chosen its source port (TCP_CONNECT_CB runs before the SYN leaves).
SEC("sockops")
int lb_sockops(struct bpf_sock_ops *ctx)
{
	if (ctx->op != BPF_SOCK_OPS_TCP_CONNECT_CB || ctx->family != 2 /* AF_INET */)
		return 1;
	// remote_port holds the port in network order in its upper 16 bits (the kernel shifts it
	// there on little-endian machines; some kernels leave it low); local_port is in host order.
	__u32 rp = ctx->remote_port;
	__u16 dport = rp >> 16 ? (__u16)(rp >> 16) : (__u16)rp;
	struct lb_revnat_key rk = {.cookie = bpf_get_socket_cookie(ctx), .backend = ctx->remote_ip4, .port = dport};
	struct lb_revnat_value *rv = bpf_map_lookup_elem(&lb_revnat, &rk);
	if (!rv)
		return 1;
	struct lb_flow_key fk = {.saddr = ctx->local_ip4, .daddr = ctx->remote_ip4, .sport = __builtin_bswap16((__u16)ctx->local_port), .dport = dport};
	struct lb_revnat_value fv = *rv;
	bpf_map_update_elem(&lb_flows, &fk, &fv, BPF_ANY);
	return 1;
}

// lb_udp_egress notes the frontend of a UDP datagram's flow when its socket was translated
// (connected or unconnected), once per flow. Other packets pass untouched: the program only
// observes (returns 1: allow).
SEC("cgroup_skb/egress")
int lb_udp_egress(struct __sk_buff *skb)
{
	if (skb->family != 2 /* AF_INET */ || skb->protocol != __builtin_bswap16(0x0800))
		return 1;
	struct iphdr ip;
	if (bpf_skb_load_bytes(skb, 0, &ip, sizeof(ip)) || ip.protocol != IPPROTO_UDP || ip.ihl != 5)
		return 1;
	struct udphdr uh;
	if (bpf_skb_load_bytes(skb, sizeof(ip), &uh, sizeof(uh)))
		return 1;
	struct lb_flow_key fk = {.saddr = ip.saddr, .daddr = ip.daddr, .sport = uh.source, .dport = uh.dest};
	if (bpf_map_lookup_elem(&lb_flows, &fk))
		return 1;
	struct lb_revnat_key rk = {.cookie = bpf_get_socket_cookie(skb), .backend = ip.daddr, .port = uh.dest};
	struct lb_revnat_value *rv = bpf_map_lookup_elem(&lb_revnat, &rk);
	if (!rv)
		return 1;
	struct lb_revnat_value fv = *rv;
	bpf_map_update_elem(&lb_flows, &fk, &fv, BPF_ANY);
	return 1;
}

char __license[] SEC("license") = "Dual BSD/GPL";
