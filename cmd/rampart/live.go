package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/rampart-sec/rampart/internal/agent"
	"github.com/rampart-sec/rampart/internal/flow"
	"github.com/rampart-sec/rampart/internal/lab/controller"
	"github.com/rampart-sec/rampart/internal/policy"
)

// liveFlags are explain --live's flags.
type liveFlags struct {
	on          bool
	lab, server string
	since       string
}

func (l *liveFlags) bind(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.BoolVar(&l.on, "live", false, "explain against what a lab or agent enforces, beside the flow records of matching connections")
	fl.StringVar(&l.lab, "lab", "", "with --live: the lab (default: the lab named default, unless --server is given)")
	fl.StringVar(&l.server, "server", "", "with --live: a node agent's health address (host:port or unix:PATH)")
	fl.StringVar(&l.since, "since", "15m", "with --live: records published since then (duration or RFC 3339 time)")
}

var errDisagree = errors.New("the dataplane's records disagree with the evaluator")

func (l *liveFlags) run(cmd *cobra.Command, from, to string, port uint16, proto, output string) error {
	if l.lab != "" && l.server != "" {
		return fmt.Errorf("--lab and --server: give one")
	}
	q := url.Values{"from": {from}, "to": {to}, "port": {strconv.Itoa(int(port))}, "protocol": {proto}, "since": {l.since}}
	var live flow.Live
	var err error
	if l.server != "" {
		live, err = agent.NewClient(l.server).Explain(cmd.Context(), q)
	} else {
		name := l.lab
		if name == "" {
			name = "default"
		}
		err = controller.NewClient(name).Get(cmd.Context(), "/explain", q, func(r io.Reader) error { return json.NewDecoder(r).Decode(&live) })
	}
	if err != nil {
		return err
	}
	w := cmd.OutOrStdout()
	if output == "json" {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		if err := enc.Encode(live); err != nil {
			return err
		}
	} else {
		writeLive(w, live)
	}
	if live.Disagreements > 0 {
		return fmt.Errorf("%w: %d of %d records", errDisagree, live.Disagreements, len(live.Records))
	}
	return nil
}

func writeLive(w io.Writer, live flow.Live) {
	policy.WriteExplanation(w, live.Decision)
	if len(live.Records) == 0 {
		fmt.Fprintln(w, "\nRecorded by the dataplanes: no connection matching this flow (probe it, or widen --since).")
		return
	}
	fmt.Fprintf(w, "\nRecorded by the dataplanes (%d connections):\n", len(live.Records))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TIME\tNODE\tSOURCE PORT\tDIR\tVERDICT\tPOLICY\tPKTS\tEVALUATOR")
	for _, lr := range live.Records {
		r := lr.Record
		agrees := "agrees"
		switch {
		case !lr.Agrees && lr.Earlier:
			agrees = "decided by an earlier state: " + lr.Why
		case !lr.Agrees:
			agrees = "DISAGREES: " + lr.Why
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%d\t%s\n", r.Time.Local().Format("15:04:05"), r.Node, r.Source.Port, r.Direction, r.Verdict, policyText(r), r.Packets, agrees)
	}
	tw.Flush()
}
