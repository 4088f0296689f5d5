package main

import (
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/rampart-sec/rampart/internal/ir"
	"github.com/rampart-sec/rampart/internal/policy"
)

func newExplainCmd() *cobra.Command {
	var in inputFlags
	var from, to, proto, output string
	var port uint16
	var staged bool
	var live liveFlags
	cmd := &cobra.Command{
		Use:   "explain (-f PATH... | --live [--lab NAME | --server ADDR]) --from NS/POD|IP --to NS/POD|IP --port P [--protocol TCP]",
		Short: "Say whether a flow is allowed, which rule decided it, and every rule considered",
		Long: `Say whether a flow is allowed, which rule decided it, and every rule considered.

With --live the cluster is the one a lab (--lab) or a node agent (--server) enforces, and the
explanation comes with the flow records the dataplanes made for matching connections, each
marked as agreeing with the evaluator or not; any disagreement makes the command fail.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if output != "text" && output != "json" {
				return fmt.Errorf("--output must be text or json, not %q", output)
			}
			if port == 0 {
				return fmt.Errorf("--port is required (1-65535)")
			}
			if live.on {
				if staged || len(in.files) > 0 {
					return fmt.Errorf("--live explains the state a lab or agent enforces: it takes neither -f nor --staged")
				}
				return live.run(cmd, from, to, port, proto, output)
			}
			pr, err := ir.ParseProtocol(proto)
			if err != nil {
				return fmt.Errorf("--protocol: %w", err)
			}
			ev, sev, err := in.evaluators(cmd.InOrStdin(), staged)
			if err != nil {
				return err
			}
			src, err := ev.ParseEndpoint(from)
			if err != nil {
				return fmt.Errorf("--from %w", err)
			}
			dst, err := ev.ParseEndpoint(to)
			if err != nil {
				return fmt.Errorf("--to %w", err)
			}
			f := policy.Flow{Src: src, Dst: dst, Protocol: pr, Port: port}
			d := ev.Verdict(f)
			var sd *policy.Decision
			if sev != nil {
				v := sev.Verdict(f)
				sd = &v
			}
			w := cmd.OutOrStdout()
			if output == "json" {
				enc := json.NewEncoder(w)
				enc.SetIndent("", "  ")
				return enc.Encode(explainJSON{From: d.Src.Describe(), To: d.Dst.Describe(), Port: port, Protocol: pr.String(), Decision: d, Staged: sd})
			}
			if staged {
				fmt.Fprintln(w, "Enforced policies:")
			}
			policy.WriteExplanation(w, d)
			switch {
			case staged && sd == nil:
				fmt.Fprintln(w, "\nNo policy is staged (annotation rampart.io/staged: \"true\"): the enforced verdict is the only one.")
			case staged:
				fmt.Fprintf(w, "\nWith the staged policies enforced too (%s):\n", stagedChange(d, *sd))
				policy.WriteExplanation(w, *sd)
			}
			return nil
		},
	}
	in.register(cmd)
	cmd.Flags().StringVar(&from, "from", "", "source: namespace/pod or an IP address")
	cmd.Flags().StringVar(&to, "to", "", "destination: namespace/pod or an IP address")
	cmd.Flags().Uint16Var(&port, "port", 0, "destination port")
	cmd.Flags().StringVar(&proto, "protocol", "TCP", "TCP, UDP or SCTP")
	cmd.Flags().StringVarP(&output, "output", "o", "text", "text or json")
	live.bind(cmd)
	cmd.Flags().BoolVar(&staged, "staged", false, "also show the verdict with the staged policies (rampart.io/staged: \"true\") enforced")
	_ = cmd.MarkFlagRequired("from")
	_ = cmd.MarkFlagRequired("to")
	return cmd
}

type explainJSON struct {
	From     string `json:"from"`
	To       string `json:"to"`
	Port     uint16 `json:"port"`
	Protocol string `json:"protocol"`
	policy.Decision
	// Staged is the decision with the staged policies enforced too (--staged, when any is).
	Staged *policy.Decision `json:"staged,omitempty"`
}

// stagedChange says in words how the staged policies change a verdict.
func stagedChange(enforced, staged policy.Decision) string {
	verdict := func(d policy.Decision) string {
		if d.Allowed {
			return "allowed"
		}
		return "denied"
	}
	if enforced.Allowed == staged.Allowed {
		return "verdict unchanged: " + verdict(staged)
	}
	return fmt.Sprintf("%s now, %s once they are enforced", verdict(enforced), verdict(staged))
}
