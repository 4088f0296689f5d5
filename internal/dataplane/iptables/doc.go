// Package iptables is the standard dataplane: it compiles an ir.Ruleset into ipsets and
// iptables chains in one node's network namespace. Peers live in ipsets (so the rule count per
// pod does not depend on how many pods a selector matches), policies become shared chains that
// report their verdict in packet-mark bits, and each local pod gets an egress and an ingress
// chain that walks the tiers in order. Render is pure; Apply installs a Spec with
// `ipset restore` and `iptables-restore --noflush`, touching only rampart's own chains and sets.
// The threat engine's responses (a blocklist ipset and per-pod SYN hashlimits) live apart from
// the policy, in a raw-table chain before conntrack (blocklist.go).
package iptables
