// Package flow turns what the dataplanes observe into flow records: one shape for both
// dataplanes, aggregated per connection, naming the policy and rule that decided. A dataplane
// reports Events (a denied packet, the first packet of an allowed connection) with the deciding
// rule already resolved to names (RuleTable); the Aggregator folds them per connection with
// bounded memory, counting what it had to drop; published Records go to a Log that serves
// queries and followers (GET /v1/flows) and optionally a rotated JSON-lines file.
package flow
