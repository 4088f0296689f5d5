package vuln

import (
	"strings"

	cvss30 "github.com/pandatix/go-cvss/30"
	cvss31 "github.com/pandatix/go-cvss/31"
	cvss40 "github.com/pandatix/go-cvss/40"
)

// Severity is an advisory's severity as rampart ranks it.
type Severity struct {
	// Score is the CVSS base score (0-10); 0 when the advisory carries no vector.
	Score float64 `json:"score,omitempty"`
	// Vector is the CVSS vector the score comes from.
	Vector string `json:"vector,omitempty"`
	// Level is critical, high, medium, low or unknown: from the score, else from the
	// ecosystem's own rating (GitHub's database_specific.severity, Debian urgency...).
	Level string `json:"level"`
}

// Levels, highest first.
const (
	LevelCritical = "critical"
	LevelHigh     = "high"
	LevelMedium   = "medium"
	LevelLow      = "low"
	LevelUnknown  = "unknown"
)

// RankScore is the severity weight used to rank findings: the CVSS score when there is one,
// else the middle of the level's CVSS band. An advisory without any rating is ranked as medium,
// so that an unrated vulnerability is never hidden below rated low ones.
func (s Severity) RankScore() float64 {
	if s.Score > 0 {
		return s.Score
	}
	switch s.Level {
	case LevelCritical:
		return 9.5
	case LevelHigh:
		return 8.0
	case LevelLow:
		return 2.0
	}
	return 5.0
}

// scoreLevel maps a CVSS score to its qualitative rating (CVSS v3/v4 bands).
func scoreLevel(score float64) string {
	switch {
	case score >= 9.0:
		return LevelCritical
	case score >= 7.0:
		return LevelHigh
	case score >= 4.0:
		return LevelMedium
	case score > 0:
		return LevelLow
	}
	return LevelUnknown
}

// cvssScore computes a vector's base score; ok is false for vectors it cannot read.
func cvssScore(vector string) (float64, bool) {
	switch {
	case strings.HasPrefix(vector, "CVSS:4.0/"):
		if c, err := cvss40.ParseVector(vector); err == nil {
			return c.Score(), true
		}
	case strings.HasPrefix(vector, "CVSS:3.1/"):
		if c, err := cvss31.ParseVector(vector); err == nil {
			return c.BaseScore(), true
		}
	case strings.HasPrefix(vector, "CVSS:3.0/"):
		if c, err := cvss30.ParseVector(vector); err == nil {
			return c.BaseScore(), true
		}
	}
	return 0, false
}

// severityOf resolves an advisory's severity for one affected entry: the highest CVSS base
// score among the entry's and the advisory's vectors (v4 and v3 preferred as published), else
// a textual rating.
func severityOf(adv *Advisory, aff *Affected) Severity {
	var best Severity
	for _, list := range [][]OSVSeverity{aff.Severity, adv.Severity} {
		for _, s := range list {
			if score, ok := cvssScore(s.Score); ok && score > best.Score {
				best = Severity{Score: score, Vector: s.Score}
			}
		}
	}
	if best.Score > 0 {
		best.Level = scoreLevel(best.Score)
		return best
	}
	for _, m := range []map[string]any{aff.EcosystemSpecific, aff.DatabaseSpecific, adv.DatabaseSpecific} {
		for _, key := range ratingKeys {
			if s, ok := m[key].(string); ok {
				if lvl := textLevel(s); lvl != LevelUnknown {
					return Severity{Level: lvl}
				}
			}
		}
	}
	return Severity{Level: LevelUnknown}
}

// ratingKeys are the fields of ecosystem- and database-specific data holding a text rating;
// the import keeps them (and drops the rest of those maps).
var ratingKeys = []string{"severity", "urgency"}

// textLevel reads the ratings ecosystems publish: GitHub (CRITICAL/HIGH/MODERATE/LOW),
// Debian urgency (high/medium/low/unimportant), Ubuntu priority.
func textLevel(s string) string {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "critical":
		return LevelCritical
	case "high", "important":
		return LevelHigh
	case "moderate", "medium":
		return LevelMedium
	case "low", "negligible", "unimportant":
		return LevelLow
	}
	return LevelUnknown
}
