// Package threat is rampart's third layer on a node: detectors that read the dataplane's own
// observations (flow events: first packets of connections and denied packets) and raise alerts
// within seconds, and the responses they ask the kernel for. Port scans are found with
// Zeek-style distinct counts of first contacts per source (ports on one target, addresses on one
// port) in a sliding window; SYN floods by comparing each local pod's rate of new TCP
// connection attempts with the rate learned for it; threat feeds (netset, Spamhaus DROP) and
// honeypots by address. Responses go to the dataplane through dataplane.Blocker (blocked
// prefixes: feeds and automatic blocks, with expiry), dataplane.SynLimiter (per-source SYN
// rate limits on flooded pods and on the pods a connection-limit shield selects),
// dataplane.Quarantiner, dataplane.Shielder (the sack-panic shield) and dataplane.ConnLimiter
// (the connection-limit shield's caps on each source's open connections). Alerts are JSON
// lines kept in a Log that HTTP clients read and follow. InForce and Threats say what is in
// force before policy, for the evaluator.
// The configuration is model.ThreatDefense; see docs/threat-defense.md.
package threat
