// Package bench holds rampart's benchmarks. They run in network namespaces the benchmark
// creates (never the host's), are bounded in time and count, and report results as ratios
// against a baseline measured in the same run. `make bench` runs them and writes JSON to
// bench/results/.
package bench
