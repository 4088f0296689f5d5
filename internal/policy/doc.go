// Package policy is the reference evaluator: given an ir.Ruleset and a flow, it decides the
// egress side (policies selecting the source pod) and the ingress side (policies selecting the
// destination pod) separately, records the tier, policy and rule that decided each, and keeps a
// trace of every rule considered. A flow is allowed only when both sides allow it. With Threats
// (WithThreats) the threat-defense responses that act before policy decide first: a blocked
// address, a quarantined pod. Both dataplanes are tested against this package, so it favours
// plainness over speed.
package policy
