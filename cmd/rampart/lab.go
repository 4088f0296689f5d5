package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/rampart-sec/rampart/internal/dataplane"
	"github.com/rampart-sec/rampart/internal/lab/apiserver"
	"github.com/rampart-sec/rampart/internal/lab/cgroup"
	"github.com/rampart-sec/rampart/internal/lab/controller"
	"github.com/rampart-sec/rampart/internal/model"
	"github.com/rampart-sec/rampart/internal/policy"
)

func newLabCmd() *cobra.Command {
	var name string
	cmd := &cobra.Command{
		Use:   "lab",
		Short: "A Kubernetes-like cluster of network namespaces on this machine, with policy enforced by the kernel",
	}
	cmd.PersistentFlags().StringVar(&name, "name", "default", "lab name (prefixes every namespace and link it creates)")
	client := func() *controller.Client { return controller.NewClient(name) }

	cmd.AddCommand(newLabUpCmd(&name), newLabServeCmd(&name), newLabDownCmd(&name))

	var applyIn inputFlags
	apply := &cobra.Command{
		Use:   "apply -f PATH...",
		Short: "Create or update objects in the lab",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !slices.Contains(applyIn.files, "-") {
				// Report every problem, with file names, before the lab sees anything.
				if _, err := applyIn.load(nil); err != nil {
					return err
				}
			}
			y, err := readManifests(applyIn.files, cmd.InOrStdin())
			if err != nil {
				return err
			}
			return client().Call(cmd.Context(), "/apply", controller.ApplyRequest{YAML: y, SkipUnsupported: applyIn.skipUnsupported}, nil)
		},
	}
	applyIn.register(apply)

	var deleteIn inputFlags
	var allPolicies bool
	del := &cobra.Command{
		Use:   "delete [-f PATH... | KIND NS/NAME | --all-policies]",
		Short: "Delete objects from the lab",
		Args:  cobra.MaximumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := controller.DeleteRequest{AllPolicies: allPolicies}
			if len(deleteIn.files) > 0 {
				y, err := readManifests(deleteIn.files, cmd.InOrStdin())
				if err != nil {
					return err
				}
				req.YAML = y
			}
			switch len(args) {
			case 2:
				req.Kind, req.Ref = args[0], args[1]
			case 1:
				k, ref, ok := strings.Cut(args[0], "/") // kubectl's KIND/NAME form
				if !ok {
					return fmt.Errorf("delete %q: give KIND NS/NAME", args[0])
				}
				req.Kind, req.Ref = k, ref
			}
			return client().Call(cmd.Context(), "/delete", req, nil)
		},
	}
	deleteIn.register(del)
	del.Flags().BoolVar(&allPolicies, "all-policies", false, "delete every NetworkPolicy, AdminNetworkPolicy and BaselineAdminNetworkPolicy")

	label := &cobra.Command{
		Use:   "label pod|namespace [NS/]NAME key=value... key-",
		Short: "Add, overwrite or remove labels of a pod or namespace",
		Args:  cobra.MinimumNArgs(3),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := controller.LabelRequest{Kind: args[0], Name: args[1], Set: map[string]string{}}
			for _, a := range args[2:] {
				if k, v, ok := strings.Cut(a, "="); ok {
					req.Set[k] = v
				} else if strings.HasSuffix(a, "-") {
					req.Remove = append(req.Remove, strings.TrimSuffix(a, "-"))
				} else {
					return fmt.Errorf("label %q: want key=value or key-", a)
				}
			}
			return client().Call(cmd.Context(), "/label", req, nil)
		},
	}

	var getOut string
	get := &cobra.Command{
		Use:   "get pods|services|nodes|policies [-o table|json]",
		Short: "List the lab's objects",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var out json.RawMessage
			if err := client().Call(cmd.Context(), "/get", args[0], &out); err != nil {
				return err
			}
			if getOut == "json" {
				return writeIndented(cmd.OutOrStdout(), out)
			}
			return writeGetTable(cmd.OutOrStdout(), args[0], out)
		},
	}
	get.Flags().StringVarP(&getOut, "output", "o", "table", "table or json")

	kubeconfig := &cobra.Command{
		Use:   "kubeconfig [--name NAME]",
		Short: "Print the path of a --kube lab's kubeconfig",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, _, err := controller.LoadState(name)
			if err != nil {
				return err
			}
			if !s.Kube {
				return fmt.Errorf("lab %q has no API server: bring it up with lab up --kube", name)
			}
			fmt.Fprintln(cmd.OutOrStdout(), controller.Kubeconfig(name))
			return nil
		},
	}

	cmd.AddCommand(apply, del, label, get, kubeconfig, newLabProbeCmd(client), newLabExecCmd(client), newLabFlowsCmd(client), newLabMetricsCmd(client), newLabAlertsCmd(client))
	cmd.AddCommand(newLabQuarantineCmds(client)...)
	return cmd
}

func newLabProbeCmd(client func() *controller.Client) *cobra.Command {
	var req controller.ProbeRequest
	var expect, output string
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "probe [--from NS/POD|external] [--to NS/POD|ADDRESS] [--port P] [--protocol TCP|UDP|SCTP] [--via service|pod]",
		Short: "Try connections between pods, or from the external client, and report which the kernel let through",
		Long: `Try connections between pods, or to an address, and report which the kernel let through.

--to ADDRESS (with --port) probes an address: a node's (node ports), an external or a
load-balancer address of a Service, or any other. --from external probes from the external
client, a machine on the nodes' network outside the cluster (172.30.0.250), through which
Services of type NodePort and LoadBalancer and externalIPs are reached as from outside.
The JSON output's "server" is the pod that answered and "client" the client's address as
that server saw it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if output != "table" && output != "json" && output != "matrix" && output != "svg" {
				return fmt.Errorf("--output must be table, matrix, json or svg, not %q", output)
			}
			var want []controller.Probe
			if expect != "" {
				b, err := os.ReadFile(expect)
				if err != nil {
					return fmt.Errorf("--expect: %w", err)
				}
				if err := json.Unmarshal(b, &want); err != nil {
					return fmt.Errorf("--expect %s: %w", expect, err)
				}
			}
			req.Timeout = timeout
			var got []controller.Probe
			if err := client().Call(cmd.Context(), "/probe", req, &got); err != nil {
				return err
			}
			switch output {
			case "json":
				b, _ := json.Marshal(got)
				if err := writeIndented(cmd.OutOrStdout(), b); err != nil {
					return err
				}
			case "matrix", "svg":
				cells := make([]policy.Cell, len(got))
				for i, p := range got {
					cells[i] = policy.Cell{From: p.From, To: p.To, Port: p.Port, Protocol: p.Protocol, Allowed: p.Connected}
				}
				write := policy.WriteTable
				if output == "svg" {
					write = policy.WriteSVG
				}
				if err := write(cmd.OutOrStdout(), cells); err != nil {
					return err
				}
			default:
				writeProbeTable(cmd.OutOrStdout(), got)
			}
			if expect != "" {
				if diffs := controller.CompareProbes(got, want); len(diffs) > 0 {
					for _, d := range diffs {
						fmt.Fprintln(cmd.ErrOrStderr(), "MISMATCH", d)
					}
					return fmt.Errorf("%d of %d expectations not met", len(diffs), len(want))
				}
				fmt.Fprintf(cmd.ErrOrStderr(), "all %d expectations met\n", len(want))
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&req.From, "from", "", "source pod ns/name, or external (default: every pod)")
	cmd.Flags().StringVar(&req.To, "to", "", "destination pod ns/name, or an address (default: every pod)")
	cmd.Flags().Uint16Var(&req.Port, "port", 0, "destination port (default: every port the destination declares)")
	cmd.Flags().StringVar(&req.Protocol, "protocol", "", "TCP, UDP or SCTP (default: all)")
	cmd.Flags().StringVar(&req.Via, "via", "service", "service (the destination's ClusterIP) or pod (its IP)")
	cmd.Flags().DurationVar(&timeout, "timeout", time.Second, "how long a probe waits for an answer")
	cmd.Flags().StringVar(&expect, "expect", "", "JSON file of expected probes (same format as -o json); exit non-zero on any difference")
	cmd.Flags().StringVarP(&output, "output", "o", "table", "table (one line per probe), matrix (a truth table per port), svg (the matrix as an image) or json")
	return cmd
}

func newLabExecCmd(client func() *controller.Client) *cobra.Command {
	return &cobra.Command{
		Use:   "exec NS/POD -- COMMAND...",
		Short: "Run a command inside a pod's network namespace",
		Args:  cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			var res controller.ExecResult
			if err := client().Call(cmd.Context(), "/exec", controller.ExecRequest{Pod: args[0], Argv: args[1:]}, &res); err != nil {
				return err
			}
			fmt.Fprint(cmd.OutOrStdout(), res.Output)
			if res.ExitCode != 0 {
				return exitError(res.ExitCode)
			}
			return nil
		},
	}
}

func newLabUpCmd(name *string) *cobra.Command {
	var in inputFlags
	var nodes int
	var dp string
	var kubeMode bool
	cmd := &cobra.Command{
		Use:   "up [--name NAME] [--nodes N] [--dataplane iptables|ebpf|none] [--kube] -f PATH...",
		Short: "Build a lab from manifests: nodes, pods with servers on their ports, Services, policy",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := controller.ValidateName(*name); err != nil {
				return err
			}
			if k, err := dataplane.ParseKind(dp); err != nil || k == dataplane.KindAuto {
				return fmt.Errorf("--dataplane must be iptables, ebpf or none, not %q", dp)
			}
			objs, err := in.load(cmd.InOrStdin())
			if err != nil {
				return err
			}
			if controller.NewClient(*name).Call(cmd.Context(), "/healthz", nil, nil) == nil {
				return fmt.Errorf("lab %q is already up: use lab apply, or lab down first", *name)
			}
			if err := cleanupLab(*name); err != nil { // leftovers of a lab that crashed
				return err
			}
			c := model.FromObjects(objs)
			if err := controller.Place(c, nodes); err != nil {
				return err
			}
			if kubeMode && dp == string(dataplane.KindNone) {
				return fmt.Errorf("--kube runs rampart agents: use --dataplane iptables or ebpf")
			}
			if kubeMode { // the first build of the API server takes minutes: not in the daemon's start-up
				fmt.Fprintln(cmd.ErrOrStderr(), "preparing the API server (built once, then cached)...")
				if _, err := apiserver.Binary(); err != nil {
					return err
				}
			}
			s := controller.Settings{Name: *name, Nodes: nodes, Dataplane: dp, Kube: kubeMode}
			if err := controller.SaveState(s, c); err != nil {
				return err
			}
			if err := startDaemon(cmd.Context(), *name); err != nil {
				_ = cleanupLab(*name)
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "lab %q is up: %d nodes, %d pods, dataplane %s\n", *name, len(c.Nodes), len(c.Pods), dp)
			if kubeMode {
				fmt.Fprintf(cmd.OutOrStdout(), "API server: KUBECONFIG=%s; one rampart agent per node\n", controller.Kubeconfig(*name))
			}
			return nil
		},
	}
	in.register(cmd)
	cmd.Flags().IntVar(&nodes, "nodes", 1, "number of nodes")
	cmd.Flags().StringVar(&dp, "dataplane", "iptables", "iptables, ebpf or none")
	cmd.Flags().BoolVar(&kubeMode, "kube", false, "run a real API server for the lab and one rampart agent process per node watching it")
	return cmd
}

// startDaemon starts `rampart lab serve` detached from this process, and waits until it
// answers (it has built the lab) or dies.
func startDaemon(ctx context.Context, name string) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	logPath := filepath.Join(controller.Dir(name), "daemon.log")
	logf, err := os.Create(logPath)
	if err != nil {
		return err
	}
	defer logf.Close()
	d := exec.Command(self, "lab", "serve", "--name", name)
	d.Stdout, d.Stderr = logf, logf
	d.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := d.Start(); err != nil {
		return fmt.Errorf("start lab daemon: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- d.Wait() }()
	client := controller.NewClient(name)
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		select {
		case err := <-exited:
			log, _ := os.ReadFile(logPath)
			return fmt.Errorf("lab daemon exited (%v):\n%s", err, strings.TrimSpace(string(log)))
		case <-time.After(100 * time.Millisecond):
		}
		if client.Call(ctx, "/healthz", nil, nil) == nil {
			return nil
		}
	}
	_ = d.Process.Kill()
	return fmt.Errorf("lab daemon did not come up within 2 minutes; see %s", logPath)
}

func newLabServeCmd(name *string) *cobra.Command {
	return &cobra.Command{
		Use:    "serve",
		Short:  "Run a lab's daemon (started by lab up)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, c, err := controller.LoadState(*name)
			if err != nil {
				return err
			}
			fabric, err := newFabric(*name)
			if err != nil {
				return err
			}
			s.Log = slog.New(slog.NewTextHandler(os.Stderr, nil))
			l := controller.New(s, c, fabric)
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			up := l.Reconcile
			if s.Kube {
				exe, err := os.Executable()
				if err != nil {
					return err
				}
				up = func(ctx context.Context) error { return l.StartKube(ctx, exe) }
			}
			if err := up(ctx); err != nil {
				_ = l.Teardown()
				return fmt.Errorf("bring up lab %q: %w", *name, err)
			}
			return serveLab(ctx, stop, l)
		},
	}
}

func newLabDownCmd(name *string) *cobra.Command {
	return &cobra.Command{
		Use:   "down [--name NAME]",
		Short: "Remove everything the lab created (also after a crash)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			client := controller.NewClient(*name)
			if client.Call(cmd.Context(), "/down", nil, nil) == nil {
				// Wait for the daemon to finish its teardown (its socket goes earlier), then
				// sweep whatever is left.
				waitDaemonExit(*name, time.Minute)
			}
			return cleanupLab(*name)
		},
	}
}

// daemonPIDFile holds the PID of a lab's daemon.
func daemonPIDFile(name string) string { return filepath.Join(controller.Dir(name), "daemon.pid") }

// daemonPID returns the PID of the lab's daemon if that process still runs as this lab's daemon.
func daemonPID(name string) (int, bool) {
	b, err := os.ReadFile(daemonPIDFile(name))
	if err != nil {
		return 0, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		return 0, false
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || !strings.Contains(string(cmdline), "serve\x00--name\x00"+name+"\x00") {
		return 0, false
	}
	return pid, true
}

// waitDaemonExit waits for the lab's daemon to exit, and kills it (by its PID) after d.
func waitDaemonExit(name string, d time.Duration) {
	deadline := time.Now().Add(d)
	for {
		pid, ok := daemonPID(name)
		if !ok {
			return
		}
		if time.Now().After(deadline) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			time.Sleep(100 * time.Millisecond)
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// cleanupLab removes a lab's processes, kernel objects and state, whether or not its daemon ran.
func cleanupLab(name string) error {
	if err := controller.CleanupProcesses(name); err != nil {
		return err
	}
	if err := teardownFabric(name); err != nil {
		return err
	}
	// A daemon that died leaves its (empty) socket-hook cgroup behind.
	if err := cgroup.CleanStale(name); err != nil {
		return err
	}
	return os.RemoveAll(controller.Dir(name))
}

func serveLab(ctx context.Context, stop func(), l *controller.Lab) error {
	if err := os.WriteFile(daemonPIDFile(l.Settings().Name), []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		return err
	}
	sock := controller.Socket(l.Settings().Name)
	_ = os.Remove(sock)
	ln, err := listenUnix(sock)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: l.Handler(stop)}
	go func() { <-ctx.Done(); _ = srv.Close() }()
	err = srv.Serve(ln)
	terr := l.Teardown()
	_ = os.Remove(sock)
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return errors.Join(err, terr)
}

func readManifests(paths []string, stdin io.Reader) (string, error) {
	if len(paths) == 0 {
		return "", fmt.Errorf("give manifests with -f")
	}
	var b strings.Builder
	for _, p := range paths {
		files, err := manifestFiles(p)
		if err != nil {
			return "", err
		}
		for _, f := range files {
			var data []byte
			if f == "-" {
				data, err = io.ReadAll(stdin)
			} else {
				data, err = os.ReadFile(f)
			}
			if err != nil {
				return "", err
			}
			b.WriteString("\n---\n")
			b.Write(data)
		}
	}
	return b.String(), nil
}

func manifestFiles(p string) ([]string, error) {
	if p == "-" {
		return []string{p}, nil
	}
	st, err := os.Stat(p)
	if err != nil {
		return nil, err
	}
	if !st.IsDir() {
		return []string{p}, nil
	}
	var files []string
	err = filepath.WalkDir(p, func(path string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			switch strings.ToLower(filepath.Ext(path)) {
			case ".yaml", ".yml", ".json":
				files = append(files, path)
			}
		}
		return err
	})
	return files, err
}

func writeIndented(w io.Writer, raw []byte) error {
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return err
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func writeGetTable(w io.Writer, what string, raw []byte) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	defer tw.Flush()
	switch strings.ToLower(what) {
	case "pods", "pod", "po":
		var pods []controller.PodView
		if err := json.Unmarshal(raw, &pods); err != nil {
			return err
		}
		fmt.Fprintln(tw, "NAMESPACE\tNAME\tNODE\tIP\tPORTS\tLABELS")
		for _, p := range pods {
			var ports, labels []string
			for _, pp := range p.Ports {
				ports = append(ports, fmt.Sprintf("%d/%s", pp.Port, pp.Protocol))
			}
			for k, v := range p.Labels {
				labels = append(labels, k+"="+v)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", p.Namespace, p.Name, p.Node, p.IP, strings.Join(ports, ","), strings.Join(labels, ","))
		}
	case "services", "service", "svc":
		var svcs []controller.ServiceView
		if err := json.Unmarshal(raw, &svcs); err != nil {
			return err
		}
		fmt.Fprintln(tw, "NAMESPACE\tNAME\tCLUSTER-IP\tEXTERNAL-IP\tPORT\tBACKENDS")
		for _, s := range svcs {
			port := fmt.Sprintf("%d/%s", s.Port, s.Protocol)
			if s.NodePort != 0 {
				port = fmt.Sprintf("%d:%d/%s", s.Port, s.NodePort, s.Protocol)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", s.Namespace, s.Name, s.ClusterIP, dash(strings.Join(s.ExternalIPs, ",")), port, strings.Join(s.Backends, ","))
		}
	case "nodes", "node", "no":
		var nodes []controller.NodeView
		if err := json.Unmarshal(raw, &nodes); err != nil {
			return err
		}
		fmt.Fprintln(tw, "NAME\tIP\tPOD-CIDR\tNETNS\tAGENT\tLAST-SYNC\tRESTARTS")
		for _, n := range nodes {
			state, last, restarts := "-", "-", "-"
			if a := n.Agent; a != nil {
				state, restarts = "not ready", fmt.Sprint(a.Restarts)
				if a.Ready {
					state = "ready"
				}
				if !a.LastSync.IsZero() {
					last = time.Since(a.LastSync).Round(time.Millisecond).String() + " ago"
				}
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", n.Name, n.IP, n.PodCIDR, n.Netns, state, last, restarts)
		}
	default:
		var pols []controller.PolicyView
		if err := json.Unmarshal(raw, &pols); err != nil {
			return err
		}
		fmt.Fprintln(tw, "KIND\tTIER\tNAMESPACE\tNAME\tPRIORITY\tENFORCED")
		for _, p := range pols {
			prio := ""
			if p.Priority != nil {
				prio = fmt.Sprint(*p.Priority)
			}
			enforced := "yes"
			if p.Staged {
				enforced = "no (staged)"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", p.Kind, p.Tier, p.Namespace, p.Name, prio, enforced)
		}
	}
	return nil
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func writeProbeTable(w io.Writer, probes []controller.Probe) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	defer tw.Flush()
	fmt.Fprintln(tw, "FROM\tTO\tPORT\tVIA\tTARGET\tRESULT\tMS\tSERVER\tCLIENT SEEN")
	connected := 0
	for _, p := range probes {
		res := "denied"
		if p.Connected {
			res = "connected"
			connected++
		}
		fmt.Fprintf(tw, "%s\t%s\t%d/%s\t%s\t%s\t%s\t%.1f\t%s\t%s\n", p.From, p.To, p.Port, p.Protocol, p.Via, p.Target, res, p.Ms, dash(p.Server), dash(p.Client))
	}
	fmt.Fprintf(tw, "\n%d of %d connected\n", connected, len(probes))
}
