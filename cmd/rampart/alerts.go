package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/rampart-sec/rampart/internal/agent"
	"github.com/rampart-sec/rampart/internal/lab/controller"
	"github.com/rampart-sec/rampart/internal/threat"
)

// alertFlags are the flags `rampart alerts` and `rampart lab alerts` share.
type alertFlags struct {
	follow                   bool
	since, typ, pod, ns, out string
}

func (f *alertFlags) bind(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.BoolVarP(&f.follow, "follow", "f", false, "keep printing alerts as they are raised")
	fl.StringVar(&f.since, "since", "", "only alerts raised since then: a duration back from now (5m) or an RFC 3339 time")
	fl.StringVar(&f.typ, "type", "", "only alerts of this type (port-scan, syn-flood, threat-feed, honeypot)")
	fl.StringVar(&f.pod, "pod", "", "only alerts whose source or target is this pod (NS/NAME)")
	fl.StringVar(&f.ns, "namespace", "", "only alerts whose source or target lives in this namespace")
	fl.StringVarP(&f.out, "output", "o", "table", "table, or json (one object per line)")
}

func (f *alertFlags) query() (url.Values, error) {
	if f.out != "table" && f.out != "json" {
		return nil, fmt.Errorf("--output must be table or json, not %q", f.out)
	}
	q := url.Values{}
	for k, v := range map[string]string{"since": f.since, "type": f.typ, "pod": f.pod, "namespace": f.ns} {
		if v != "" {
			q.Set(k, v)
		}
	}
	if _, err := threat.ParseFilter(q.Get, time.Now()); err != nil {
		return nil, fmt.Errorf("--since %q: want a duration such as 5m or an RFC 3339 time", f.since)
	}
	if f.follow {
		q.Set("follow", "true")
	}
	return q, nil
}

// alertPrinter writes alerts as --output asks.
type alertPrinter struct {
	json bool
	tw   *tabwriter.Writer
	w    io.Writer
}

func newAlertPrinter(w io.Writer, output string) *alertPrinter {
	p := &alertPrinter{json: output == "json", w: w}
	if !p.json {
		p.tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(p.tw, "TIME\tNODE\tTYPE\tSEVERITY\tSOURCE\tTARGET\tRESPONSE\tMESSAGE")
	}
	return p
}

func partyText(p threat.Party) string {
	switch {
	case p.Pod != "":
		return p.Namespace + "/" + p.Pod
	case p.IP != "":
		return p.IP
	}
	return "-"
}

func (p *alertPrinter) print(a threat.Alert, flush bool) error {
	if p.json {
		b, err := json.Marshal(a)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(p.w, "%s\n", b)
		return err
	}
	fmt.Fprintf(p.tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", a.Time.Local().Format("15:04:05.000"), a.Node, a.Type, a.Severity,
		partyText(a.Source), partyText(a.Target), a.Response, a.Message)
	if flush {
		return p.tw.Flush()
	}
	return nil
}

func (p *alertPrinter) done() error {
	if p.tw != nil {
		return p.tw.Flush()
	}
	return nil
}

// readAlerts decodes a JSON-lines stream of alerts.
func readAlerts(body io.Reader, fn func(threat.Alert) error) error {
	sc := bufio.NewScanner(body)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		var a threat.Alert
		if err := json.Unmarshal(sc.Bytes(), &a); err != nil {
			return fmt.Errorf("bad alert: %w", err)
		}
		if err := fn(a); err != nil {
			return err
		}
	}
	return sc.Err()
}

func newAlertsCmd() *cobra.Command {
	var af alertFlags
	var server string
	cmd := &cobra.Command{
		Use:   "alerts [--server ADDR] [--follow] [--since 5m] [--type TYPE] [--pod NS/NAME] [--namespace NS] [-o table|json]",
		Short: "Show an agent's threat-defense alerts (port scans, SYN floods, threat feeds, honeypots)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			q, err := af.query()
			if err != nil {
				return err
			}
			f, _ := threat.ParseFilter(q.Get, time.Now())
			ctx, cancel := followContext(cmd.Context())
			defer cancel()
			p := newAlertPrinter(cmd.OutOrStdout(), af.out)
			err = agent.NewClient(server).Alerts(ctx, f, af.follow, func(a threat.Alert) error { return p.print(a, af.follow) })
			return firstErr(err, p.done())
		},
	}
	af.bind(cmd)
	cmd.Flags().StringVar(&server, "server", "127.0.0.1:9963", "the agent's health address (host:port or unix:PATH)")
	return cmd
}

func newLabAlertsCmd(client func() *controller.Client) *cobra.Command {
	var af alertFlags
	cmd := &cobra.Command{
		Use:   "alerts [--name NAME] [--follow] [--since 5m] [--type TYPE] [--pod NS/NAME] [--namespace NS] [-o table|json]",
		Short: "Show the threat-defense alerts of every lab node, merged",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			q, err := af.query()
			if err != nil {
				return err
			}
			ctx, cancel := followContext(cmd.Context())
			defer cancel()
			p := newAlertPrinter(cmd.OutOrStdout(), af.out)
			err = client().Get(ctx, "/alerts", q, func(body io.Reader) error {
				err := readAlerts(body, func(a threat.Alert) error { return p.print(a, af.follow) })
				if ctx.Err() != nil || (err != nil && strings.Contains(err.Error(), "closed")) {
					return nil
				}
				return err
			})
			return firstErr(err, p.done())
		},
	}
	af.bind(cmd)
	return cmd
}
