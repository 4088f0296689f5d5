package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/signal"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/rampart-sec/rampart/internal/agent"
	"github.com/rampart-sec/rampart/internal/flow"
	"github.com/rampart-sec/rampart/internal/lab/controller"
)

// flowFlags are the flags `rampart flows` and `rampart lab flows` share.
type flowFlags struct {
	follow                            bool
	since, verdict, pod, ns, pol, out string
}

func (f *flowFlags) bind(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.BoolVarP(&f.follow, "follow", "f", false, "keep printing records as they are published")
	fl.StringVar(&f.since, "since", "", "only records published since then: a duration back from now (5m) or an RFC 3339 time")
	fl.StringVar(&f.verdict, "verdict", "", "allowed or denied")
	fl.StringVar(&f.pod, "pod", "", "only flows from or to this pod (NS/NAME)")
	fl.StringVar(&f.ns, "namespace", "", "only flows from or to pods of this namespace")
	fl.StringVar(&f.pol, "policy", "", "only flows this policy decided, isolated or would decide when staged (NAME or NS/NAME)")
	fl.StringVarP(&f.out, "output", "o", "table", "table, or json (one object per line)")
}

// filter checks the flags and returns the filter they ask for.
func (f *flowFlags) filter() (flow.Filter, error) {
	if f.out != "table" && f.out != "json" {
		return flow.Filter{}, fmt.Errorf("--output must be table or json, not %q", f.out)
	}
	q := map[string][]string{"verdict": {f.verdict}, "pod": {f.pod}, "namespace": {f.ns}, "policy": {f.pol}, "since": {f.since}}
	filt, err := flow.ParseFilter(q, time.Now())
	if err != nil {
		return filt, fmt.Errorf("--%w", err)
	}
	return filt, nil
}

// printer writes records as the --output asks; a table is flushed per record when following.
type printer struct {
	json bool
	tw   *tabwriter.Writer
	w    io.Writer
	n    int
}

func newPrinter(w io.Writer, output string) *printer {
	p := &printer{json: output == "json", w: w}
	if !p.json {
		p.tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(p.tw, "TIME\tNODE\tSOURCE\tDESTINATION\tPROTO\tDIR\tVERDICT\tPOLICY\tPKTS\tBYTES")
	}
	return p
}

func (p *printer) print(r flow.Record, flush bool) error {
	p.n++
	if p.json {
		b, err := json.Marshal(r)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(p.w, "%s\n", b)
		return err
	}
	fmt.Fprintf(p.tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\n", r.Time.Local().Format("15:04:05.000"), r.Node,
		endpointText(r.Source, false), endpointText(r.Destination, true), r.Protocol, r.Direction, r.Verdict, policyText(r), r.Packets, r.Bytes)
	if flush {
		return p.tw.Flush()
	}
	return nil
}

func (p *printer) done() error {
	if p.tw != nil {
		return p.tw.Flush()
	}
	return nil
}

func endpointText(e flow.Endpoint, dst bool) string {
	s := fmt.Sprintf("%s:%d", e.IP, e.Port)
	if e.Pod != "" {
		s = fmt.Sprintf("%s/%s:%d", e.Namespace, e.Pod, e.Port)
	}
	if dst && e.Service != nil && e.Service.Name != "" {
		s += fmt.Sprintf(" (svc %s/%s)", e.Service.Namespace, e.Service.Name)
	}
	return s
}

func policyText(r flow.Record) string {
	p := r.Policy
	s := "-"
	if p != nil {
		name := p.Name
		if p.Namespace != "" {
			name = p.Namespace + "/" + p.Name
		}
		switch {
		case p.Rule != nil:
			s = fmt.Sprintf("%s %s rule %d (%s)", p.Kind, name, *p.Rule, p.Action)
		case len(p.IsolatedBy) > 1:
			s = fmt.Sprintf("%s %s (+%d) isolation", p.Kind, name, len(p.IsolatedBy)-1)
		default:
			s = fmt.Sprintf("%s %s isolation", p.Kind, name)
		}
	}
	if r.Staged != nil {
		s += " | staged: " + r.Staged.Verdict
	}
	return s
}

// followContext ends on SIGINT/SIGTERM, so that --follow stops cleanly.
func followContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
}

func newFlowsCmd() *cobra.Command {
	var ff flowFlags
	var server string
	cmd := &cobra.Command{
		Use:   "flows [--server ADDR] [--follow] [--since 5m] [--verdict allowed|denied] [--pod NS/NAME] [--namespace NS] [--policy NAME] [-o table|json]",
		Short: "Show an agent's flow records: which policy allowed or denied real traffic",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f, err := ff.filter()
			if err != nil {
				return err
			}
			ctx, cancel := followContext(cmd.Context())
			defer cancel()
			c := agent.NewClient(server)
			p := newPrinter(cmd.OutOrStdout(), ff.out)
			err = c.Flows(ctx, f, ff.follow, func(r flow.Record) error { return p.print(r, ff.follow) })
			return firstErr(err, p.done())
		},
	}
	ff.bind(cmd)
	cmd.Flags().StringVar(&server, "server", "127.0.0.1:9963", "the agent's health address (host:port or unix:PATH)")
	return cmd
}

func newLabFlowsCmd(client func() *controller.Client) *cobra.Command {
	var ff flowFlags
	var node string
	cmd := &cobra.Command{
		Use:   "flows [--node NODE] [--follow] [--since 5m] [--verdict allowed|denied] [--pod NS/NAME] [--namespace NS] [--policy NAME] [-o table|json]",
		Short: "Show the flow records of every lab node, merged",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f, err := ff.filter()
			if err != nil {
				return err
			}
			f.Node = node
			q := f.Values()
			if ff.follow {
				q.Set("follow", "true")
			}
			ctx, cancel := followContext(cmd.Context())
			defer cancel()
			p := newPrinter(cmd.OutOrStdout(), ff.out)
			err = client().Get(ctx, "/flows", q, func(body io.Reader) error {
				err := flow.Decode(body, func(r flow.Record) error { return p.print(r, ff.follow) })
				if err != nil && ctx.Err() == nil {
					return fmt.Errorf("lab flows: %w", err)
				}
				return nil
			})
			return firstErr(err, p.done())
		},
	}
	ff.bind(cmd)
	cmd.Flags().StringVar(&node, "node", "", "only this node's records")
	return cmd
}

func newLabMetricsCmd(client func() *controller.Client) *cobra.Command {
	var node string
	cmd := &cobra.Command{
		Use:   "metrics [--node NODE]",
		Short: "Print the node agents' metrics (Prometheus text format; each node's block headed by '# node NODE')",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			q := map[string][]string{}
			if node != "" {
				q["node"] = []string{node}
			}
			return client().Get(cmd.Context(), "/metrics", q, func(body io.Reader) error {
				_, err := io.Copy(cmd.OutOrStdout(), body)
				return err
			})
		},
	}
	cmd.Flags().StringVar(&node, "node", "", "only this node's metrics")
	return cmd
}

func firstErr(errs ...error) error {
	for _, err := range errs {
		if err != nil && !errors.Is(err, context.Canceled) {
			return err
		}
	}
	return nil
}
