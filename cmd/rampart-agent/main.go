// Command rampart-agent is the node agent alone, the DaemonSet's entrypoint: the same command
// as `rampart agent`, without the CLI's vulnerability scanner, lab and policy tools, so a node
// maps half the code and holds less memory. Its flags are `rampart agent`'s.
package main

import (
	"fmt"
	"os"

	"github.com/rampart-sec/rampart/internal/agent/agentcmd"
)

func main() {
	cmd := agentcmd.New("rampart-agent")
	cmd.SilenceUsage, cmd.SilenceErrors = true, true
	if err := cmd.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}
