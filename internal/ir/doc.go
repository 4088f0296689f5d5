// Package ir is the contract between policy and enforcement: a Ruleset holds pods, nodes and
// services with their addresses, address sets (pod IPs, CIDRs with exceptions), named-port
// resolutions, and per-direction tiers of rules with selectors already resolved. The reference
// evaluator and every dataplane read only this; none of them sees labels or Kubernetes types.
//
// Tier semantics are data (Tier.Kind): Admin tiers are first-match with Allow, Deny and Pass;
// the NetworkPolicy tier isolates the pods it selects and allows the union of its rules; the
// Baseline tier is first-match with Allow and Deny; traffic no tier decides is allowed.
package ir
