package controller

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/rampart-sec/rampart/internal/model"
)

// In --kube labs the node agents read the ThreatDefense as agents in a cluster do: from a file
// (the DaemonSet's mounted ConfigMap, here the lab's threatdefense.yaml), through
// --threat-config. The lab writes it, signals the agents to load it now, and waits until each
// has loaded the file's content.

// threatFile is the ThreatDefense file of a --kube lab's agents.
func threatFile(lab string) string { return filepath.Join(Dir(lab), "threatdefense.yaml") }

// kubeThreat puts td in force on every node agent (nil: none).
func (l *Lab) kubeThreat(ctx context.Context, td *model.ThreatDefense) error {
	path := threatFile(l.settings.Name)
	var content []byte
	if td != nil {
		c := *td
		c.APIVersion, c.Kind = model.ThreatDefenseAPIVersion, model.KindThreatDefense
		b, err := yaml.Marshal(&c)
		if err != nil {
			return err
		}
		content = b
		// Replaced by a rename, as a ConfigMap's mount is: an agent never reads half a file.
		tmp := path + ".tmp"
		if err := os.WriteFile(tmp, b, 0o644); err != nil {
			return err
		}
		if err := os.Rename(tmp, path); err != nil {
			return err
		}
	} else if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	want := ""
	if content != nil {
		want = fmt.Sprintf("%x", sha256.Sum256(content))
	}
	k := l.kube
	// Each agent loads the file as a new generation when signalled, also when it is unchanged
	// (applying the same document again reloads every feed): wait for a load after the signal.
	signalled := time.Now()
	for _, p := range k.procs() {
		p.mu.Lock()
		if p.cmd != nil && p.cmd.Process != nil {
			_ = p.cmd.Process.Signal(syscall.SIGHUP) // our own child, by PID
		}
		p.mu.Unlock()
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		done := true
		for _, p := range k.procs() {
			st, err := p.client.Status(ctx)
			if err != nil || st.Threat.File != want || (want != "" && st.Threat.Loaded.Before(signalled)) {
				if err == nil && st.Threat.Error != "" && st.Threat.File != want {
					return fmt.Errorf("node %s: %s", p.node, st.Threat.Error)
				}
				done = false
			}
		}
		if done {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the ThreatDefense is not in force on every node after 30s (agents: %s)", k.agentSummary(ctx))
		case <-time.After(50 * time.Millisecond):
		}
	}
}
