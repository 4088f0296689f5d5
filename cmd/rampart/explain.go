package main

import (
	"encoding/json"
	"fmt"
	"net/netip"

	"github.com/spf13/cobra"

	"github.com/rampart-sec/rampart/internal/ir"
	"github.com/rampart-sec/rampart/internal/model"
	"github.com/rampart-sec/rampart/internal/policy"
)

func newExplainCmd() *cobra.Command {
	var in inputFlags
	var from, to, proto, output string
	var port uint16
	cmd := &cobra.Command{
		Use:   "explain -f PATH... --from NS/POD|IP --to NS/POD|IP --port P [--protocol TCP]",
		Short: "Say whether a flow is allowed, which rule decided it, and every rule considered",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if output != "text" && output != "json" {
				return fmt.Errorf("--output must be text or json, not %q", output)
			}
			if port == 0 {
				return fmt.Errorf("--port is required (1-65535)")
			}
			pr, err := ir.ParseProtocol(proto)
			if err != nil {
				return fmt.Errorf("--protocol: %w", err)
			}
			ev, err := in.evaluator(cmd.InOrStdin())
			if err != nil {
				return err
			}
			src, err := resolveEndpoint(ev.Ruleset(), from, "--from")
			if err != nil {
				return err
			}
			dst, err := resolveEndpoint(ev.Ruleset(), to, "--to")
			if err != nil {
				return err
			}
			d := ev.Verdict(policy.Flow{Src: src, Dst: dst, Protocol: pr, Port: port})
			if output == "json" {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(explainJSON{From: d.Src.Describe(), To: d.Dst.Describe(), Port: port, Protocol: pr.String(), Decision: d})
			}
			policy.WriteExplanation(cmd.OutOrStdout(), d)
			return nil
		},
	}
	in.register(cmd)
	cmd.Flags().StringVar(&from, "from", "", "source: namespace/pod or an IP address")
	cmd.Flags().StringVar(&to, "to", "", "destination: namespace/pod or an IP address")
	cmd.Flags().Uint16Var(&port, "port", 0, "destination port")
	cmd.Flags().StringVar(&proto, "protocol", "TCP", "TCP, UDP or SCTP")
	cmd.Flags().StringVarP(&output, "output", "o", "text", "text or json")
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
}

// resolveEndpoint turns "ns/pod" or an IP into the address policy sees.
func resolveEndpoint(rs *ir.Ruleset, s, flag string) (netip.Addr, error) {
	if ip, err := model.ParseIP(s); err == nil {
		return ip, nil
	}
	p := rs.PodByKey(s)
	if p == nil {
		return netip.Addr{}, fmt.Errorf("%s %q: not an IP address and no pod namespace/name with that name", flag, s)
	}
	if len(p.IPs) == 0 {
		return netip.Addr{}, fmt.Errorf("%s %q: the pod has no IP (set status.podIP)", flag, s)
	}
	return p.IP(), nil
}
