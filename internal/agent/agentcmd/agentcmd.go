// Package agentcmd is the node agent's command line: its flags wired to the agent, its
// dataplane and the cluster source, and its health, metrics and profile endpoints. `rampart
// agent` and the rampart-agent binary (the DaemonSet's entrypoint, without the CLI's scanner and
// lab) are this one command.
package agentcmd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	cebpf "github.com/cilium/ebpf"
	"github.com/spf13/cobra"

	"github.com/rampart-sec/rampart/internal/agent"
	"github.com/rampart-sec/rampart/internal/agent/node"
	"github.com/rampart-sec/rampart/internal/agent/runner"
	"github.com/rampart-sec/rampart/internal/dataplane"
	"github.com/rampart-sec/rampart/internal/dataplane/backend"
	"github.com/rampart-sec/rampart/internal/dataplane/ebpf"
	"github.com/rampart-sec/rampart/internal/doctor"
	"github.com/rampart-sec/rampart/internal/flow"
	"github.com/rampart-sec/rampart/internal/model"
	"github.com/rampart-sec/rampart/internal/source/kube"
	"github.com/rampart-sec/rampart/internal/threat"
)

// agentFlags are `rampart agent`'s flags.
type agentFlags struct {
	kubeconfig, nodeName, dp, metricsAddr, healthAddr, logFormat, threatFile string
	netns, pinDir, uplink, podPrefix, services, cgroup, mapSizes             string
	minInterval, grace                                                       time.Duration
	flows                                                                    bool
	flowLog                                                                  string
	flowLogMaxBytes                                                          int64
	flowMaxConns                                                             int
	pprof                                                                    bool
	gcPercent                                                                int
	lbFlowsFD                                                                int
}

// New returns the agent's command, named use ("agent" under rampart, "rampart-agent" alone).
func New(use string) *cobra.Command {
	var f agentFlags
	cmd := &cobra.Command{
		Use:   use,
		Short: "Run the node agent: enforce the cluster's policies on this node (a DaemonSet's container)",
		Long: `The node agent watches the cluster (Namespaces, Nodes, Pods, Services, EndpointSlices,
NetworkPolicies, AdminNetworkPolicies, BaselineAdminNetworkPolicies) and keeps this node's
dataplane enforcing them for the pods whose spec.nodeName is this node. A local pod's host-side
interface is the one the route to its address leaves through (routed veths, as the ptp CNI
plugin makes them). Stopping or killing the agent leaves enforcement in force; a new agent adopts
it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cmd.Flags().Changed("gc-percent") || os.Getenv("GOGC") == "" {
				debug.SetGCPercent(f.gcPercent)
			}
			return runAgent(cmd.Context(), f)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.kubeconfig, "kubeconfig", "", "kubeconfig of the cluster (default: in-cluster, then $KUBECONFIG)")
	fl.StringVar(&f.nodeName, "node-name", os.Getenv("NODE_NAME"), "this node's name (default $NODE_NAME)")
	fl.StringVar(&f.dp, "dataplane", "auto", "iptables, ebpf, or auto (eBPF where the kernel serves it)")
	fl.StringVar(&f.metricsAddr, "metrics-addr", ":9962", "where /metrics is served (host:port or unix:PATH; empty: off)")
	fl.StringVar(&f.threatFile, "threat-config", "", "a file holding the ThreatDefense (mount its ConfigMap there); looked at for changes every few seconds")
	fl.StringVar(&f.healthAddr, "health-addr", ":9963", "where /healthz, /readyz and /status are served (host:port or unix:PATH)")
	fl.StringVar(&f.logFormat, "log-format", "text", "text or json")
	fl.StringVar(&f.netns, "netns", "", "named network namespace of the node (default: the agent's own)")
	fl.StringVar(&f.pinDir, "pin-dir", "/sys/fs/bpf/rampart", "bpffs directory where eBPF enforcement is pinned (it outlives the agent)")
	fl.StringVar(&f.uplink, "uplink", "", "the node's interface toward other nodes (default: the default route's)")
	fl.StringVar(&f.podPrefix, "pod-interface-prefix", "veth", "host-side pod interfaces start with this (the CNI's veth prefix); their traffic is dropped until the agent has programmed them (empty: off)")
	fl.StringVar(&f.services, "services", "rampart", "who translates Services: rampart, or kube-proxy (iptables dataplane only: rampart then enforces policy on kube-proxy's translated traffic)")
	fl.StringVar(&f.mapSizes, "ebpf-map-sizes", "", "eBPF: entries of the dataplane's maps by kind, KIND=N,... (kinds: "+strings.Join(ebpf.MapKinds(), ", ")+"); a state needing more fails its sync whole, and rampart_programmed_capacity reports the sizes")
	fl.StringVar(&f.cgroup, "cgroup", "", "eBPF: cgroup v2 directory holding the pods (kubelet's cgroupRoot in the unified hierarchy) whose sockets connect to Service backends directly (empty: Services translated per packet only)")
	fl.DurationVar(&f.minInterval, "min-sync-interval", 0, "least time between two dataplane syncs (0: as changes come; bursts coalesce)")
	fl.BoolVar(&f.flows, "flows", true, "publish flow records (GET /v1/flows on the health address); false: the dataplane writes no flow events")
	fl.StringVar(&f.flowLog, "flow-log", "", "also append every flow record as a JSON line to this file (rotated by size)")
	fl.Int64Var(&f.flowLogMaxBytes, "flow-log-max-bytes", 100<<20, "rotate --flow-log at this size (3 old files are kept)")
	fl.IntVar(&f.flowMaxConns, "flow-max-connections", 16384, "connections aggregated at once; events of more are dropped and counted (rampart_flow_records_dropped_total)")
	fl.IntVar(&f.gcPercent, "gc-percent", 40, "heap growth that triggers Go's garbage collector (as GOGC; when the flag is not given, $GOGC wins): below Go's 100 it holds the heap, most of it the cluster's objects, closer to what is live for a little more CPU, as felix's GoGCPercent does")
	fl.BoolVar(&f.pprof, "pprof", false, "also serve Go's profiles (/debug/pprof/) on the health address, for diagnosing the agent's CPU and memory")
	fl.DurationVar(&f.grace, "disconnect-grace", 30*time.Second, "how long the API server may be unreachable before /readyz fails (enforcement goes on)")
	// A lab's connect-time balancer is the lab's, shared by its nodes: its agents get the
	// balancer's flow notes as an inherited descriptor, to name Services in flow records.
	fl.IntVar(&f.lbFlowsFD, "lb-flows-fd", -1, "eBPF: descriptor of the flow notes (lb_flows) of a connect-time balancer another process runs")
	_ = fl.MarkHidden("lb-flows-fd")
	return cmd
}

func newLogger(format string) (*slog.Logger, error) {
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(os.Stderr, nil)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(os.Stderr, nil)), nil
	}
	return nil, fmt.Errorf("--log-format must be text or json, not %q", format)
}

// check reports flags that contradict each other or kind (KindAuto: before doctor.Pick, when
// only what holds for every kind is checked).
func (f agentFlags) check(kind dataplane.Kind) error {
	switch {
	case kind == dataplane.KindNone:
		return errors.New("--dataplane: the agent enforces with iptables or ebpf")
	case f.nodeName == "":
		return errors.New("--node-name (or $NODE_NAME) is required")
	case f.services != "rampart" && f.services != "kube-proxy":
		return fmt.Errorf("--services must be rampart or kube-proxy, not %q", f.services)
	case f.services == "kube-proxy" && kind == dataplane.KindEBPF:
		return errors.New("--services=kube-proxy needs --dataplane=iptables: the eBPF dataplane decides policy before netfilter, so it translates Services itself (run it without kube-proxy)")
	case f.cgroup != "" && kind == dataplane.KindIPTables:
		return errors.New("--cgroup: connect-time Services need --dataplane=ebpf")
	}
	return nil
}

func runAgent(parent context.Context, f agentFlags) error {
	log, err := newLogger(f.logFormat)
	if err != nil {
		return err
	}
	slog.SetDefault(log) // components without a logger of their own (the dataplanes) log here
	kind, err := dataplane.ParseKind(f.dp)
	if err != nil {
		return fmt.Errorf("--dataplane: %w", err)
	}
	if err := f.check(kind); err != nil {
		return err
	}
	sizes, err := ebpf.ParseMapSizes(f.mapSizes)
	if err != nil {
		return fmt.Errorf("--ebpf-map-sizes: %w", err)
	}
	if f.threatFile != "" {
		// A bad file stops the start with its errors; later changes that do not decode keep the
		// configuration in force (and show in /status). No file is no ThreatDefense (yet): the
		// DaemonSet mounts an optional ConfigMap.
		if err := checkThreatFile(f.threatFile); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("--threat-config: %w", err)
		}
	}
	if kind, err = doctor.Pick(kind, doctor.Options{PinDir: f.pinDir}); err != nil {
		return err
	}
	if err := f.check(kind); err != nil { // what auto picked
		return err
	}
	cfg, err := kube.RESTConfig(f.kubeconfig)
	if err != nil {
		return err
	}
	src, err := kube.NewFromConfig(cfg, kube.Options{Logger: log})
	if err != nil {
		return err
	}
	ifaces, err := node.Open(f.nodeName, f.netns)
	if err != nil {
		return err
	}
	defer ifaces.Close()
	dn := dataplane.Node{Name: f.nodeName, Interface: ifaces.Interface, Uplink: f.uplink, PodInterfacePrefix: f.podPrefix, KubeProxy: f.services == "kube-proxy"}
	if (kind == dataplane.KindEBPF || !dn.KubeProxy) && dn.Uplink == "" {
		dn.Uplink = ifaces.DefaultRouteLink()
	}
	opts := dataplane.Options{Netns: f.netns, NoFlowEvents: !f.flows}
	if kind == dataplane.KindEBPF {
		opts.PinDir = filepath.Join(f.pinDir, f.nodeName)
		opts.Cgroup = f.cgroup
		opts.MapSizes = sizes
		if f.lbFlowsFD >= 0 {
			notes, err := cebpf.NewMapFromFD(f.lbFlowsFD)
			if err != nil {
				return fmt.Errorf("--lb-flows-fd: %w", err)
			}
			defer notes.Close()
			opts.Frontend = func(client, backend netip.AddrPort) (netip.AddrPort, bool) {
				return ebpf.FrontendIn(notes, client, backend)
			}
		}
	}
	dp, err := backend.New(kind, dn, opts)
	if err != nil {
		return err
	}
	events := kube.NewEvents(src, "rampart-agent", f.nodeName)
	defer events.Stop()
	acfg := agent.Config{Node: f.nodeName, Dataplane: kind, Logger: log, DisconnectGrace: f.grace, PodInterfacePrefix: f.podPrefix, ThreatFile: f.threatFile,
		Runner: runner.Config{MinInterval: f.minInterval}, OnUnenforced: events.Gap, OnAlert: events.Alert,
		Flows: agent.FlowConfig{Off: !f.flows, File: f.flowLog, FileMaxBytes: f.flowLogMaxBytes, Aggregate: flow.Config{MaxConnections: f.flowMaxConns}}}
	if f.services != "kube-proxy" && kind != dataplane.KindNone {
		acfg.ServiceHealth = agent.ListenIn(f.netns) // what kube-proxy would answer
	}
	a, err := agent.New(acfg, src, dp)
	if err != nil {
		return err
	}

	ctx, stop := signal.NotifyContext(parent, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	errc := make(chan error, 4)
	srvs, err := serveAgent(a, f.healthAddr, f.metricsAddr, f.pprof, errc)
	if err != nil {
		return err
	}
	defer func() {
		for _, s := range srvs {
			_ = s.Close()
		}
	}()
	go func() {
		if err := src.Run(ctx); err != nil && ctx.Err() == nil {
			errc <- fmt.Errorf("cluster source: %w", err)
		}
	}()
	if err := ifaces.Watch(ctx, a.InterfaceChanged); err != nil {
		return err
	}
	go func() { errc <- a.Run(ctx) }()
	// SIGHUP: look at --threat-config now, not at the next poll (the lab signals after a write).
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				a.ReloadThreatFile()
			}
		}
	}()
	select {
	case err := <-errc:
		stop()
		return err
	case <-ctx.Done():
		return <-errc // the agent releases the dataplane and returns
	}
}

// serveAgent serves the health and metrics endpoints (on one listener when the addresses are
// the same).
func serveAgent(a *agent.Agent, healthAddr, metricsAddr string, profiles bool, errc chan<- error) ([]*http.Server, error) {
	type ep struct {
		addr string
		mux  *http.ServeMux
	}
	var eps []ep
	add := func(addr, pattern string, h http.Handler) {
		if addr == "" {
			return
		}
		for _, e := range eps {
			if e.addr == addr {
				e.mux.Handle(pattern, h)
				return
			}
		}
		m := http.NewServeMux()
		m.Handle(pattern, h)
		eps = append(eps, ep{addr, m})
	}
	add(healthAddr, "/", a.HealthHandler())
	add(metricsAddr, "/metrics", a.MetricsHandler())
	if profiles {
		add(healthAddr, "/debug/pprof/", http.HandlerFunc(pprof.Index)) // heap, allocs, goroutine, ...
		add(healthAddr, "/debug/pprof/profile", http.HandlerFunc(pprof.Profile))
		add(healthAddr, "/debug/pprof/trace", http.HandlerFunc(pprof.Trace))
	}
	var srvs []*http.Server
	for _, e := range eps {
		ln, err := listen(e.addr)
		if err != nil {
			for _, s := range srvs {
				s.Close()
			}
			return nil, err
		}
		s := &http.Server{Handler: e.mux, ReadHeaderTimeout: 5 * time.Second}
		go func() {
			if err := s.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- err
			}
		}()
		srvs = append(srvs, s)
	}
	return srvs, nil
}

// listen opens host:port, or unix:PATH (replacing a stale socket).
func listen(addr string) (net.Listener, error) {
	if path, ok := strings.CutPrefix(addr, "unix:"); ok {
		_ = os.Remove(path)
		return net.Listen("unix", path)
	}
	return net.Listen("tcp", addr)
}

// checkThreatFile decodes and validates a ThreatDefense file, and reads its feeds.
func checkThreatFile(path string) error {
	fh, err := os.Open(path)
	if err != nil {
		return err
	}
	defer fh.Close()
	objs, err := model.Decode(fh, path, model.DecodeOptions{})
	if err != nil {
		return err
	}
	if len(objs) != 1 || objs[0].Kind != model.KindThreatDefense {
		return fmt.Errorf("%s: want exactly one ThreatDefense", path)
	}
	td := objs[0].Obj.(*model.ThreatDefense)
	for i := range td.Spec.Feeds {
		if _, _, err := threat.LoadFeed(&td.Spec.Feeds[i]); err != nil {
			return fmt.Errorf("ThreatDefense %s: spec.feeds[%d]: %w", td.Name, i, err)
		}
	}
	return nil
}
