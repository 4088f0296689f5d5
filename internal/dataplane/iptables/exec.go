package iptables

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strings"
)

// Runner runs a command (with optional stdin) in the dataplane's network namespace.
type Runner interface {
	Run(ctx context.Context, stdin string, name string, args ...string) (string, error)
}

// NetnsRunner runs commands inside a named network namespace, or in the current one when
// Netns is empty (the agent on a real node). It uses nsenter, which only switches the network
// namespace; `ip netns exec` also remounts /sys, which costs more than the command itself.
type NetnsRunner struct{ Netns string }

// Run executes the command and returns its stdout; a failure carries stderr.
func (n NetnsRunner) Run(ctx context.Context, stdin, name string, args ...string) (string, error) {
	argv := append([]string{name}, args...)
	if n.Netns != "" {
		argv = append([]string{"nsenter", "--net=/run/netns/" + n.Netns, "--"}, argv...)
	}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}
