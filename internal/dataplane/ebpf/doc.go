// Package ebpf is the eBPF dataplane (docs/ebpf-design.md). Its pure part compiles an
// ir.Ruleset into the tables the BPF programs look up: identities for remote addresses (an LPM
// "ipcache") and, per local endpoint and direction, a verdict for every (identity, protocol,
// destination port interval), with the port intervals as LPM prefixes; it walks the tiers itself
// rather than asking the evaluator, so tests comparing table lookups with the evaluator check two
// independent implementations of the semantics. A Builder keeps the numbers of endpoints,
// identities and rules from one build to the next, so that successive tables differ only where
// the cluster did. Its Linux part loads the programs once, attaches them (TCX or clsact) to the
// host side of each local pod's veth and to the node's uplink, writes each Sync's tables as the
// difference into the slot not in force and switches to it, load-balances Services, sweeps
// conntrack, reads flow events and counters, and holds the threat engine's responses (blocklist
// with XDP early drop, SYN limits, quarantine, shields, connection limits).
package ebpf
