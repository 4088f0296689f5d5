package report

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/rampart-sec/rampart/internal/vuln"
)

// WriteJSON writes v indented.
func WriteJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// WriteImageTable prints one image's findings, most severe first, and a summary line.
func WriteImageTable(w io.Writer, img Image) error {
	fmt.Fprintf(w, "%s (%s): %d packages, %s\n", img.Image, img.Kind, img.Packages, summary(img.Vulnerabilities))
	if len(img.Vulnerabilities) == 0 {
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SEVERITY\tID\tPACKAGE\tINSTALLED\tFIXED\tALIASES")
	for _, v := range img.Vulnerabilities {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", SeverityPhrase(v.Severity), v.ID, pkgName(v.Package), v.Package.Version, orDash(v.Fixed), orDash(strings.Join(v.CVEs(), ",")))
	}
	return tw.Flush()
}

// WriteClusterTable prints ranked findings with their one-sentence explanations.
func WriteClusterTable(w io.Writer, r Cluster) error {
	var all []vuln.Vulnerability
	for _, img := range r.Images {
		all = append(all, img.Vulnerabilities...)
	}
	fmt.Fprintf(w, "%d image(s) scanned, %s\n", len(r.Images), summary(all))
	for _, u := range r.Unscanned {
		fmt.Fprintf(w, "not scanned: %s (used by %s): %s\n", u.Image, strings.Join(u.Pods, ", "), u.Error)
	}
	if len(r.Findings) == 0 {
		return nil
	}
	fmt.Fprintln(w)
	// Align the rows, then print each finding's explanation under its row.
	var rows bytes.Buffer
	tw := tabwriter.NewWriter(&rows, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "RANK\tSEVERITY\tEXPOSURE\tID\tPACKAGE\tINSTALLED\tFIXED\tIMAGE")
	for _, f := range r.Findings {
		exp := string(f.Exposure)
		if f.ExposureChange != "" {
			exp = string(f.ExposureBefore) + "->" + exp
		}
		fmt.Fprintf(tw, "%.2f\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", f.Rank, levelName(f.Severity.Level), exp, f.ID, pkgName(f.Package), f.Package.Version, orDash(f.Fixed), f.Image)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	lines := strings.Split(strings.TrimSuffix(rows.String(), "\n"), "\n")
	fmt.Fprintln(w, lines[0])
	for i, f := range r.Findings {
		fmt.Fprintln(w, lines[i+1])
		fmt.Fprintf(w, "      %s\n", f.Explanation)
		if f.ExposureChange != "" {
			fmt.Fprintf(w, "      with the proposed policies: %s\n", f.ExposureChange)
		}
	}
	return nil
}

func levelName(l string) string {
	if l == vuln.LevelUnknown {
		return "unrated"
	}
	return l
}

func pkgName(p vuln.Installed) string {
	if p.Source != "" && p.Source != p.Name {
		return p.Name + " (" + p.Source + ")"
	}
	return p.Name
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func summary(vs []vuln.Vulnerability) string {
	if len(vs) == 0 {
		return "no known vulnerabilities"
	}
	counts := map[string]int{}
	for _, v := range vs {
		counts[v.Severity.Level]++
	}
	var parts []string
	for _, l := range []string{vuln.LevelCritical, vuln.LevelHigh, vuln.LevelMedium, vuln.LevelLow, vuln.LevelUnknown} {
		if counts[l] > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", counts[l], levelName(l)))
		}
	}
	return fmt.Sprintf("%d vulnerabilit%s (%s)", len(vs), map[bool]string{true: "y", false: "ies"}[len(vs) == 1], strings.Join(parts, ", "))
}

// SARIF 2.1.0, the format code-scanning services ingest: one rule per advisory, one result per
// finding, located at the image (and the file the package was found in).
type sarifLog struct {
	Schema  string     `json:"$schema"`
	Version string     `json:"version"`
	Runs    []sarifRun `json:"runs"`
}

type sarifRun struct {
	Tool    sarifTool     `json:"tool"`
	Results []sarifResult `json:"results"`
}

type sarifTool struct {
	Driver sarifDriver `json:"driver"`
}

type sarifDriver struct {
	Name           string      `json:"name"`
	InformationURI string      `json:"informationUri"`
	Rules          []sarifRule `json:"rules"`
}

type sarifRule struct {
	ID               string            `json:"id"`
	ShortDescription sarifText         `json:"shortDescription"`
	HelpURI          string            `json:"helpUri"`
	Properties       map[string]any    `json:"properties,omitempty"`
	DefaultConfig    map[string]string `json:"defaultConfiguration,omitempty"`
}

type sarifText struct {
	Text string `json:"text"`
}

type sarifResult struct {
	RuleID     string          `json:"ruleId"`
	Level      string          `json:"level"`
	Message    sarifText       `json:"message"`
	Locations  []sarifLocation `json:"locations"`
	Properties map[string]any  `json:"properties,omitempty"`
}

type sarifLocation struct {
	PhysicalLocation struct {
		ArtifactLocation struct {
			URI string `json:"uri"`
		} `json:"artifactLocation"`
	} `json:"physicalLocation"`
}

// SARIFItem is one result to write: a vulnerability in an image, with its message.
type SARIFItem struct {
	Vuln    vuln.Vulnerability
	Image   string
	Message string
	Extra   map[string]any
}

// WriteSARIF writes items as a SARIF 2.1.0 log.
func WriteSARIF(w io.Writer, items []SARIFItem) error {
	run := sarifRun{Tool: sarifTool{Driver: sarifDriver{Name: "rampart", InformationURI: "https://github.com/rampart-sec/rampart"}}, Results: []sarifResult{}}
	rules := map[string]bool{}
	run.Tool.Driver.Rules = []sarifRule{}
	for _, it := range items {
		v := it.Vuln
		if !rules[v.ID] {
			rules[v.ID] = true
			desc := v.Summary
			if desc == "" {
				desc = v.ID
			}
			props := map[string]any{"tags": []string{"security", "vulnerability"}}
			if s := v.Severity.RankScore(); s > 0 {
				props["security-severity"] = fmt.Sprintf("%.1f", s)
			}
			run.Tool.Driver.Rules = append(run.Tool.Driver.Rules, sarifRule{
				ID: v.ID, ShortDescription: sarifText{desc}, HelpURI: "https://osv.dev/vulnerability/" + v.ID, Properties: props,
				DefaultConfig: map[string]string{"level": sarifLevel(v.Severity.Level)},
			})
		}
		var loc sarifLocation
		loc.PhysicalLocation.ArtifactLocation.URI = it.Image
		if len(v.Package.Location) > 0 {
			loc.PhysicalLocation.ArtifactLocation.URI = it.Image + v.Package.Location[0]
		}
		props := map[string]any{"package": v.Package.Name, "installedVersion": v.Package.Version, "fixedVersion": v.Fixed, "aliases": v.Aliases}
		for k, x := range it.Extra {
			props[k] = x
		}
		run.Results = append(run.Results, sarifResult{RuleID: v.ID, Level: sarifLevel(v.Severity.Level), Message: sarifText{it.Message}, Locations: []sarifLocation{loc}, Properties: props})
	}
	return WriteJSON(w, sarifLog{Schema: "https://json.schemastore.org/sarif-2.1.0.json", Version: "2.1.0", Runs: []sarifRun{run}})
}

func sarifLevel(level string) string {
	switch level {
	case vuln.LevelCritical, vuln.LevelHigh:
		return "error"
	case vuln.LevelMedium, vuln.LevelUnknown:
		return "warning"
	}
	return "note"
}

// ImageSARIF makes SARIF items of one image's findings.
func ImageSARIF(img Image) []SARIFItem {
	var out []SARIFItem
	for _, v := range img.Vulnerabilities {
		msg := fmt.Sprintf("%s %s %s: %s", pkgName(v.Package), v.Package.Version, SeverityPhrase(v.Severity), fixPhrase(v))
		out = append(out, SARIFItem{Vuln: v, Image: img.Image, Message: msg})
	}
	return out
}

// ClusterSARIF makes SARIF items of ranked findings, the explanation as message.
func ClusterSARIF(r Cluster) []SARIFItem {
	var out []SARIFItem
	for _, f := range r.Findings {
		msg := fmt.Sprintf("%s %s %s. %s", pkgName(f.Package), f.Package.Version, f.ID, f.Explanation)
		out = append(out, SARIFItem{Vuln: f.Vulnerability, Image: f.Image, Message: msg, Extra: map[string]any{"exposure": f.Exposure, "rank": f.Rank}})
	}
	return out
}

func fixPhrase(v vuln.Vulnerability) string {
	if v.Fixed == "" {
		return "no fix published"
	}
	return "fixed in " + v.Fixed
}
