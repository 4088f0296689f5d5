// Command rampart is the CLI: it wires flags to the internal packages and holds no policy logic.
package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/rampart-sec/rampart/internal/agent/agentcmd"
	"github.com/rampart-sec/rampart/internal/model"
)

// exitError is a command's exit code passed on (lab exec), as kubectl exec does.
type exitError int

func (e exitError) Error() string { return fmt.Sprintf("command terminated with exit code %d", int(e)) }

func main() {
	if err := newRoot().Execute(); err != nil {
		var es model.Errors
		var exit exitError
		if errors.As(err, &exit) {
			fmt.Fprintln(os.Stderr, exit)
			os.Exit(int(exit))
		}
		if errors.As(err, &es) {
			for _, e := range es {
				fmt.Fprintln(os.Stderr, "error:", e)
			}
			fmt.Fprintf(os.Stderr, "%d error(s)\n", len(es))
		} else {
			fmt.Fprintln(os.Stderr, "error:", err)
		}
		os.Exit(1)
	}
}

func newRoot() *cobra.Command {
	root := &cobra.Command{
		Use:           "rampart",
		Short:         "Defend Kubernetes workloads: policy you can explain, enforced by iptables or eBPF",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newPolicyCmd(), newExplainCmd(), newLabCmd(), newScanCmd(), newDBCmd(), agentcmd.New("agent"), newDoctorCmd(), newFlowsCmd(), newAlertsCmd())
	root.AddCommand(newQuarantineCmds()...)
	return root
}
