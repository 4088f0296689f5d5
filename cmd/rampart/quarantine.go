package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/client-go/kubernetes"

	"github.com/rampart-sec/rampart/internal/lab/controller"
	"github.com/rampart-sec/rampart/internal/source/kube"
)

// newQuarantineCmds returns `rampart quarantine` and `rampart release`: they annotate a pod
// through the API server, and every node's agent cuts (or restores) its traffic.
func newQuarantineCmds() []*cobra.Command {
	var out []*cobra.Command
	for _, on := range []bool{true, false} {
		var kubeconfig string
		verb, short := "quarantine", "Cut all traffic of a pod but DNS (ThreatDefense spec.quarantine.allow), on every node"
		if !on {
			verb, short = "release", "Lift a pod's quarantine, manual or automatic"
		}
		cmd := &cobra.Command{
			Use:   verb + " NS/POD [--kubeconfig PATH]",
			Short: short,
			Args:  cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				ns, name, ok := strings.Cut(args[0], "/")
				if !ok || ns == "" || name == "" {
					return fmt.Errorf("%s %q: give NS/POD", verb, args[0])
				}
				cfg, err := kube.RESTConfig(kubeconfig)
				if err != nil {
					return err
				}
				cs, err := kubernetes.NewForConfig(cfg)
				if err != nil {
					return err
				}
				if _, err := kube.Quarantine(cmd.Context(), cs.CoreV1().Pods(ns), ns, name, on, time.Now()); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "pod %s/%s: %s\n", ns, name, map[bool]string{true: "quarantined", false: "released"}[on])
				return nil
			},
		}
		cmd.Flags().StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig of the cluster (default: $KUBECONFIG, ~/.kube/config)")
		out = append(out, cmd)
	}
	return out
}

// newLabQuarantineCmds returns `rampart lab quarantine` and `rampart lab release`.
func newLabQuarantineCmds(client func() *controller.Client) []*cobra.Command {
	var out []*cobra.Command
	for _, on := range []bool{true, false} {
		verb, short := "quarantine", "Cut all traffic of a lab pod but DNS, until released"
		if !on {
			verb, short = "release", "Lift a lab pod's quarantine, manual or automatic"
		}
		out = append(out, &cobra.Command{
			Use:   verb + " [--name NAME] NS/POD",
			Short: short,
			Args:  cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				return client().Call(cmd.Context(), "/quarantine", controller.QuarantineRequest{Pod: args[0], On: on}, nil)
			},
		})
	}
	return out
}
