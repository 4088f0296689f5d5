// Package ebpf is the eBPF dataplane (issue 5, in progress). This part is pure: it compiles an
// ir.Ruleset into the tables the BPF programs look up (docs/ebpf-design.md): identities for remote
// addresses (an LPM "ipcache") and, per local endpoint and direction, a verdict for every
// (identity, protocol, destination port interval), with the port intervals as LPM prefixes. It
// walks the tiers itself rather than asking the evaluator, so tests comparing table lookups with
// the evaluator check two independent implementations of the semantics.
package ebpf
