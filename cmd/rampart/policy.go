package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/rampart-sec/rampart/internal/ir/compile"
	"github.com/rampart-sec/rampart/internal/model"
	"github.com/rampart-sec/rampart/internal/policy"
	"github.com/rampart-sec/rampart/internal/threat"
)

// inputFlags are the flags every command that reads manifests shares.
type inputFlags struct {
	files           []string
	allowUnknown    bool
	skipUnsupported bool
}

func (f *inputFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringArrayVarP(&f.files, "filename", "f", nil, "manifest file, directory (recursive) or - for stdin; repeatable")
	cmd.Flags().BoolVar(&f.allowUnknown, "allow-unknown-fields", false, "accept fields the API types do not define (strict by default)")
	cmd.Flags().BoolVar(&f.skipUnsupported, "skip-unsupported", false, "warn about, instead of failing on, policies rampart does not enforce as written: skip objects of unknown policy kinds and API versions, and compile fields it does not enforce (domainNames) fail-closed")
}

func (f *inputFlags) load(stdin io.Reader) ([]model.Object, error) {
	warn := func(msg string) { fmt.Fprintln(os.Stderr, "warning:", msg) }
	return model.Load(f.files, model.LoadOptions{Stdin: stdin, DecodeOptions: model.DecodeOptions{AllowUnknownFields: f.allowUnknown, SkipUnsupported: f.skipUnsupported, Warn: warn}})
}

// checkGaps fails on policies rampart would not enforce as written (a cluster read from an
// API server or a lab, where decoding did not check them), or warns with --skip-unsupported.
func (f *inputFlags) checkGaps(gaps []model.Gap) error {
	if len(gaps) == 0 {
		return nil
	}
	var msgs []string
	for _, g := range gaps {
		if f.skipUnsupported {
			fmt.Fprintln(os.Stderr, "warning:", g)
			continue
		}
		msgs = append(msgs, "error: "+g.String())
	}
	if len(msgs) == 0 {
		return nil
	}
	return fmt.Errorf("%s\n%d policy problem(s): rampart would not enforce these as written; pass --skip-unsupported to go on without them", strings.Join(msgs, "\n"), len(msgs))
}

func (f *inputFlags) evaluator(stdin io.Reader) (*policy.Evaluator, error) {
	ev, _, err := f.evaluators(stdin, false)
	return ev, err
}

// evaluators returns the evaluator of the enforced policies and, with staged, the one of the
// enforced and staged policies together (nil when no policy is staged).
func (f *inputFlags) evaluators(stdin io.Reader, staged bool) (enforced, withStaged *policy.Evaluator, err error) {
	objs, err := f.load(stdin)
	if err != nil {
		return nil, nil, err
	}
	c := model.FromObjects(objs)
	rs, err := compile.Compile(c)
	if err != nil {
		return nil, nil, err
	}
	// Quarantines and blocking feeds decide before policy, on the nodes as here.
	th, unread, err := threat.Threats(c)
	if err != nil {
		return nil, nil, err
	}
	for _, name := range unread {
		fmt.Fprintf(os.Stderr, "warning: threat feed %s is read from its URL by the agents, not here: its blocks are not taken into account\n", name)
	}
	if staged && c.HasStaged() {
		srs, err := compile.CompileWith(c, compile.Options{Staged: true})
		if err != nil {
			return nil, nil, err
		}
		withStaged = policy.New(srs).WithThreats(th)
	}
	return policy.New(rs).WithThreats(th), withStaged, nil
}

func newPolicyCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "policy", Short: "Validate policies and compute reachability without a cluster"}
	cmd.AddCommand(newValidateCmd(), newMatrixCmd(), newRecommendCmd(), newDiffCmd())
	return cmd
}

func newValidateCmd() *cobra.Command {
	var in inputFlags
	cmd := &cobra.Command{
		Use:   "validate -f PATH...",
		Short: "Check manifests as the API server would, reporting every error",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			objs, err := in.load(cmd.InOrStdin())
			if err != nil {
				return err
			}
			counts := map[string]int{}
			var staged []string
			for _, o := range objs {
				counts[o.Kind]++
				if model.IsStaged(o.Meta()) {
					staged = append(staged, o.Kind+" "+o.Ref())
				}
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%d objects valid", len(objs))
			sep := ": "
			for _, k := range []string{model.KindNamespace, model.KindNode, model.KindPod, model.KindService, model.KindEndpointSlice, model.KindNetworkPolicy, model.KindANP, model.KindBANP} {
				if counts[k] > 0 {
					fmt.Fprintf(cmd.OutOrStdout(), "%s%d %s", sep, counts[k], k)
					sep = ", "
				}
			}
			fmt.Fprintln(cmd.OutOrStdout())
			if len(staged) > 0 {
				fmt.Fprintf(cmd.OutOrStdout(), "%d staged, not enforced (rampart.io/staged): %s\n", len(staged), strings.Join(staged, ", "))
			}
			return nil
		},
	}
	in.register(cmd)
	return cmd
}

func newMatrixCmd() *cobra.Command {
	var in inputFlags
	var ports, output string
	cmd := &cobra.Command{
		Use:   "matrix -f PATH... [--ports 80/TCP,81/UDP] [-o table|json|svg]",
		Short: "Reachability between every ordered pair of pods, as the policies decide it",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if output != "table" && output != "json" && output != "svg" {
				return fmt.Errorf("--output must be table, json or svg, not %q", output)
			}
			var pp []policy.PortProto
			if ports != "" {
				var err error
				if pp, err = policy.ParsePorts(ports); err != nil {
					return fmt.Errorf("--ports: %w", err)
				}
			}
			ev, err := in.evaluator(cmd.InOrStdin())
			if err != nil {
				return err
			}
			cells := ev.Matrix(pp)
			if output == "json" {
				if cells == nil {
					cells = []policy.Cell{}
				}
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(cells)
			}
			if output == "svg" {
				return policy.WriteSVG(cmd.OutOrStdout(), cells)
			}
			if len(cells) == 0 {
				fmt.Fprintln(cmd.OutOrStdout(), "no pairs of pods with addresses and ports to show")
				return nil
			}
			return policy.WriteTable(cmd.OutOrStdout(), cells)
		},
	}
	in.register(cmd)
	cmd.Flags().StringVar(&ports, "ports", "", "ports to probe, e.g. 80/TCP,81/UDP (default: every port each destination pod declares)")
	cmd.Flags().StringVarP(&output, "output", "o", "table", "table, json, or svg (an image of the matrix, coloured by verdict)")
	return cmd
}
