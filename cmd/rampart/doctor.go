package main

import (
	"encoding/json"
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/rampart-sec/rampart/internal/doctor"
)

func newDoctorCmd() *cobra.Command {
	var output, pinDir string
	cmd := &cobra.Command{
		Use:   "doctor [-o table|json]",
		Short: "Report what this node's kernel and system offer each dataplane, and which features will work",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if output != "table" && output != "json" {
				return fmt.Errorf("--output must be table or json, not %q", output)
			}
			r := doctor.Run(doctor.Options{PinDir: pinDir})
			w := cmd.OutOrStdout()
			if output == "json" {
				enc := json.NewEncoder(w)
				enc.SetIndent("", "  ")
				return enc.Encode(r)
			}
			fmt.Fprintf(w, "kernel %s\n\n", r.Kernel)
			tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "CHECK\tOK\tDETAIL")
			for _, c := range r.Checks {
				fmt.Fprintf(tw, "%s\t%s\t%s\n", c.Name, yesNo(c.OK), c.Detail)
			}
			fmt.Fprintln(tw, "\nDATAPLANE\tFEATURE\tWORKS\tNEEDS")
			for _, f := range r.Features {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", f.Dataplane, f.Name, yesNo(f.OK), f.Needs)
			}
			tw.Flush()
			auto := string(r.Auto)
			if auto == "" {
				auto = "nothing (neither dataplane works)"
			}
			fmt.Fprintf(w, "\n--dataplane auto picks %s\n", auto)
			return nil
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "table", "table or json")
	cmd.Flags().StringVar(&pinDir, "pin-dir", "/sys/fs/bpf/rampart", "where the agent would pin eBPF state")
	return cmd
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}
