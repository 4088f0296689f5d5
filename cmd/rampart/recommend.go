package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	networkingv1 "k8s.io/api/networking/v1"
	"sigs.k8s.io/yaml"

	"github.com/rampart-sec/rampart/internal/agent"
	"github.com/rampart-sec/rampart/internal/flow"
	"github.com/rampart-sec/rampart/internal/lab/controller"
	"github.com/rampart-sec/rampart/internal/model"
	"github.com/rampart-sec/rampart/internal/recommend"
	"github.com/rampart-sec/rampart/internal/source/kube"
	"github.com/rampart-sec/rampart/internal/whatif"
)

// clusterFlags choose where a command reads the cluster's objects: manifests, a lab, or an
// API server.
type clusterFlags struct {
	in         inputFlags
	lab        string
	kubeconfig string
}

func (f *clusterFlags) register(cmd *cobra.Command) {
	f.in.register(cmd)
	cmd.Flags().StringVar(&f.lab, "lab", "", "take the cluster's objects from this lab")
	cmd.Flags().StringVar(&f.kubeconfig, "kubeconfig", "", "take the cluster's objects from the API server this kubeconfig names")
}

// load reads the cluster from the one source given, failing on policies rampart would not
// enforce as written (unless --skip-unsupported).
func (f *clusterFlags) load(ctx context.Context, stdin io.Reader) (*model.Cluster, error) {
	sources := 0
	for _, set := range []bool{len(f.in.files) > 0, f.lab != "", f.kubeconfig != ""} {
		if set {
			sources++
		}
	}
	if sources != 1 {
		return nil, errors.New("give the cluster's objects with one of -f PATH..., --lab NAME or --kubeconfig PATH")
	}
	var c *model.Cluster
	var gaps []model.Gap
	switch {
	case f.lab != "":
		_, lc, err := controller.LoadState(f.lab)
		if err != nil {
			return nil, err
		}
		c = lc
	case f.kubeconfig != "":
		ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		kc, unenforced, err := kube.Load(ctx, f.kubeconfig)
		cancel()
		if err != nil {
			return nil, err
		}
		for _, k := range unenforced {
			gaps = append(gaps, model.Gap{Kind: k, Msg: "the cluster serves this policy kind, which rampart does not enforce: its objects are not taken into account"})
		}
		c = kc
	default:
		objs, err := f.in.load(stdin)
		if err != nil {
			return nil, err
		}
		c = model.FromObjects(objs)
	}
	if err := f.in.checkGaps(append(gaps, c.Unsupported()...)); err != nil {
		return nil, err
	}
	return c, nil
}

// withProposal is c with the policies in files added (replace: instead of its own), read as
// strictly as the cluster's own manifests.
func (f *clusterFlags) withProposal(c *model.Cluster, files []string, replace bool, stdin io.Reader) (*model.Cluster, error) {
	in := inputFlags{files: files, allowUnknown: f.in.allowUnknown, skipUnsupported: f.in.skipUnsupported}
	objs, err := in.load(stdin)
	if err != nil {
		return nil, err
	}
	return whatif.Apply(c, objs, replace)
}

// readFlows reads flow records (JSON lines) from a file, or stdin for "-".
func readFlows(path string, stdin io.Reader) ([]flow.Record, error) {
	r := stdin
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return nil, fmt.Errorf("--flows: %w", err)
		}
		defer f.Close()
		r = f
	}
	out := []flow.Record{}
	if err := flow.Decode(r, func(rec flow.Record) error { out = append(out, rec); return nil }); err != nil {
		return nil, fmt.Errorf("--flows %s: %w", path, err)
	}
	return out, nil
}

// labFlows reads every flow record a lab's node agents still hold.
func labFlows(ctx context.Context, lab string) ([]flow.Record, error) {
	out := []flow.Record{}
	err := controller.NewClient(lab).Get(ctx, "/flows", nil, func(body io.Reader) error {
		return flow.Decode(body, func(rec flow.Record) error { out = append(out, rec); return nil })
	})
	if err != nil {
		return nil, fmt.Errorf("lab %s: flows: %w", lab, err)
	}
	return out, nil
}

func newRecommendCmd() *cobra.Command {
	var (
		cf        clusterFlags
		flowsPath string
		server    string
		since     time.Duration
		output    string
		opts      recommend.Options
	)
	cmd := &cobra.Command{
		Use:   "recommend [--flows FILE|-] [--lab NAME] [--kubeconfig PATH] [--namespace NS]... [--since DURATION] [-o yaml|json]",
		Short: "Propose least-privilege NetworkPolicies from observed allowed flows (staged unless --enforce)",
		Long: `Propose least-privilege NetworkPolicies from the flow records of allowed connections.

Each workload that talked gets one policy selecting it by its stable labels (its controller's
pods; never pod names or addresses) that allows exactly the peers and ports observed: pods by
their workload's labels (and kubernetes.io/metadata.name for another namespace), addresses
outside the cluster's pods as ipBlocks aggregated to --external-prefix, ports by number, or by
name where every pod of the target declares it. Each covered namespace gets a default deny
(ingress and egress) and, where the cluster runs DNS pods (k8s-app: kube-dns), an egress rule
to them on port 53. The output is staged (rampart.io/staged: "true") unless --enforce.

The cluster's objects come from --lab, --kubeconfig or -f; the flow records from --flows (a
file or - for stdin, as 'rampart flows -o json' prints them), else the lab's node agents, else
an agent (--server).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if output != "yaml" && output != "json" {
				return fmt.Errorf("--output must be yaml or json, not %q", output)
			}
			if since < 0 {
				return fmt.Errorf("--since must not be negative")
			}
			c, err := cf.load(cmd.Context(), cmd.InOrStdin())
			if err != nil {
				return err
			}
			var records []flow.Record
			switch {
			case flowsPath != "":
				records, err = readFlows(flowsPath, cmd.InOrStdin())
			case cf.lab != "":
				records, err = labFlows(cmd.Context(), cf.lab)
			case server != "":
				err = agent.NewClient(server).Flows(cmd.Context(), flow.Filter{}, false, func(r flow.Record) error { records = append(records, r); return nil })
			default:
				err = errors.New("give the flow records with --flows FILE|-, --lab NAME or --server ADDR")
			}
			if err != nil {
				return err
			}
			if since > 0 {
				opts.Since = time.Now().Add(-since)
			}
			res, err := recommend.Recommend(c, records, opts)
			if err != nil {
				return err
			}
			for _, w := range res.Warnings {
				fmt.Fprintln(cmd.ErrOrStderr(), "warning:", w)
			}
			var ignored []string
			for _, k := range model.SortedKeys(res.Ignored) {
				ignored = append(ignored, fmt.Sprintf("%d %s", res.Ignored[k], k))
			}
			note := fmt.Sprintf("%d polic%s from %d distinct allowed flow(s) of %d record(s)", len(res.Policies), plural(len(res.Policies), "y", "ies"), res.Flows, len(records))
			if len(ignored) > 0 {
				note += " (left out: " + strings.Join(ignored, ", ") + ")"
			}
			fmt.Fprintln(cmd.ErrOrStderr(), note)
			return writePolicies(cmd.OutOrStdout(), output, res.Policies, note, opts.Enforce)
		},
	}
	cf.register(cmd)
	fl := cmd.Flags()
	fl.StringVar(&flowsPath, "flows", "", "flow records as JSON lines (rampart flows -o json), a file or - for stdin")
	fl.StringVar(&server, "server", "", "read the flow records from this agent (its health address, host:port or unix:PATH)")
	fl.StringArrayVar(&opts.Namespaces, "namespace", nil, "cover only this namespace (repeatable; default: every namespace with pods)")
	fl.DurationVar(&since, "since", 0, "only records last seen within this long (default: all)")
	fl.StringVarP(&output, "output", "o", "yaml", "yaml (documents separated by ---) or json (a v1 List)")
	fl.BoolVar(&opts.Enforce, "enforce", false, "leave out the rampart.io/staged annotation, so that applying the output enforces it")
	fl.IntVar(&opts.PrefixV4, "external-prefix", 24, "aggregate IPv4 addresses outside the cluster's pods to ipBlocks of this prefix length")
	fl.IntVar(&opts.PrefixV6, "external-prefix-v6", 64, "aggregate IPv6 addresses outside the cluster's pods to ipBlocks of this prefix length")
	return cmd
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// writePolicies prints policies as YAML documents or a JSON List.
func writePolicies(w io.Writer, output string, pols []*networkingv1.NetworkPolicy, note string, enforce bool) error {
	if output == "json" {
		items := make([]any, len(pols))
		for i, p := range pols {
			items[i] = p
		}
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(map[string]any{"apiVersion": "v1", "kind": "List", "items": items})
	}
	fmt.Fprintf(w, "# Recommended by rampart: %s.\n", note)
	if enforce {
		fmt.Fprintln(w, "# Enforced when applied.")
	} else {
		fmt.Fprintln(w, "# Staged (rampart.io/staged: \"true\"): flow records say what they would decide; check with\n# rampart policy diff, then remove the annotation (or recommend --enforce) to enforce them.")
	}
	for _, p := range pols {
		b, err := yaml.Marshal(p)
		if err != nil {
			return err
		}
		fmt.Fprintf(w, "---\n%s", b)
	}
	return nil
}

func newDiffCmd() *cobra.Command {
	var (
		cf        clusterFlags
		proposed  []string
		replace   bool
		flowsPath string
		output    string
	)
	cmd := &cobra.Command{
		Use:   "diff -f CLUSTER... --proposed PATH... [--replace] [--flows FILE] [-o table|json]",
		Short: "What proposed policies would change: every flow whose verdict changes, and each observed flow they would break",
		Long: `Compare, with the reference evaluator, the cluster as it is with the same cluster plus the
proposed policies (or, with --replace, with its policies replaced by them). The flows compared
are the observed ones (--flows: flow records as JSON lines) or else every ordered pair of pods
on each port the destination declares. Proposed policies count as enforced even when staged.

The exit status is non-zero when an observed allowed flow (without --flows: any pair allowed
now) would be denied.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if output != "table" && output != "json" {
				return fmt.Errorf("--output must be table or json, not %q", output)
			}
			if len(proposed) == 0 {
				return errors.New("give the proposed policies with --proposed PATH")
			}
			if flowsPath == "-" && len(cf.in.files) == 1 && cf.in.files[0] == "-" {
				return errors.New("stdin can carry either -f - or --flows -, not both")
			}
			before, err := cf.load(cmd.Context(), cmd.InOrStdin())
			if err != nil {
				return err
			}
			after, err := cf.withProposal(before, proposed, replace, cmd.InOrStdin())
			if err != nil {
				return fmt.Errorf("--proposed: %w", err)
			}
			var records []flow.Record
			if flowsPath != "" {
				if records, err = readFlows(flowsPath, cmd.InOrStdin()); err != nil {
					return err
				}
			}
			rep, err := whatif.Compare(before, after, records)
			if err != nil {
				return err
			}
			if output == "json" {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				if err := enc.Encode(rep); err != nil {
					return err
				}
			} else if err := writeDiffTable(cmd.OutOrStdout(), rep, records != nil); err != nil {
				return err
			}
			if rep.Broken > 0 {
				what := "observed allowed flow(s)"
				if records == nil {
					what = "pod pair(s) allowed now"
				}
				return fmt.Errorf("the proposal would deny %d %s", rep.Broken, what)
			}
			return nil
		},
	}
	cf.register(cmd)
	fl := cmd.Flags()
	fl.StringArrayVar(&proposed, "proposed", nil, "proposed policies: a file, directory (recursive) or - for stdin; repeatable")
	fl.BoolVar(&replace, "replace", false, "compare with the cluster's policies replaced by the proposal, instead of added to")
	fl.StringVar(&flowsPath, "flows", "", "observed flow records as JSON lines (rampart flows -o json), a file or - for stdin")
	fl.StringVarP(&output, "output", "o", "table", "table or json")
	return cmd
}

func writeDiffTable(w io.Writer, rep whatif.Report, observed bool) error {
	what := "pod pairs on their declared ports"
	if observed {
		what = "observed flows"
	}
	fmt.Fprintf(w, "%d %s compared: %d change verdict (%d opened, %d closed), %d would break", rep.Compared, what, len(rep.Changed), rep.Opened, rep.Closed, rep.Broken)
	if rep.Unresolved > 0 {
		fmt.Fprintf(w, "; %d record(s) without addresses, port or verdict skipped", rep.Unresolved)
	}
	fmt.Fprintln(w)
	if len(rep.Changed) == 0 {
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "\nFROM\tTO\tPORT\tOBSERVED\tBEFORE\tAFTER\tDECIDED AFTER BY\t")
	for _, f := range rep.Changed {
		obs := "-"
		if f.Observed {
			obs = f.ObservedVerdict
		}
		mark := ""
		if f.Breaks {
			mark = "BREAKS"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d/%s\t%s\t%s\t%s\t%s\t%s\n", f.From, f.To, f.Port, f.Protocol, obs, f.Before, f.After, f.AfterDecidedBy, mark)
	}
	return tw.Flush()
}
