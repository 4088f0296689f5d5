package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/rampart-sec/rampart/internal/ir/compile"
	"github.com/rampart-sec/rampart/internal/model"
	"github.com/rampart-sec/rampart/internal/policy"
	"github.com/rampart-sec/rampart/internal/vuln"
	"github.com/rampart-sec/rampart/internal/vuln/exposure"
	"github.com/rampart-sec/rampart/internal/vuln/inventory"
	"github.com/rampart-sec/rampart/internal/vuln/report"
)

func newDBCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "db", Short: "Manage the offline vulnerability database (OSV format)"}
	var dir string
	imp := &cobra.Command{
		Use:   "import PATH...",
		Short: "Build the local database from OSV JSON files, directories or zip archives (osv.dev's per-ecosystem all.zip)",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			bar := newProgress("importing")
			info, err := vuln.Import(dir, args, vuln.ImportOptions{Progress: bar.Update})
			bar.Done()
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "imported %d advisories for %d packages into %s (%s); %d withdrawn left out\n",
				info.Advisories, info.Packages, dir, ecosystems(info), info.Withdrawn)
			return nil
		},
	}
	info := &cobra.Command{
		Use:   "info",
		Short: "Describe the local database",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			db, err := vuln.Open(dir)
			if err != nil {
				return err
			}
			defer db.Close()
			i := db.Info()
			fmt.Fprintf(cmd.OutOrStdout(), "%s: %d advisories for %d packages (%s), imported %s from %s\n",
				dir, i.Advisories, i.Packages, ecosystems(i), i.Imported.Format(time.RFC3339), strings.Join(i.Sources, ", "))
			return nil
		},
	}
	cmd.PersistentFlags().StringVar(&dir, "db", vuln.DefaultDir(), "database directory ($RAMPART_DB)")
	cmd.AddCommand(imp, info)
	return cmd
}

func ecosystems(i vuln.Info) string {
	var parts []string
	for e, n := range i.Ecosystems {
		parts = append(parts, fmt.Sprintf("%s %d", e, n))
	}
	sort.Strings(parts)
	return strings.Join(parts, ", ")
}

func newScanCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "scan", Short: "Find known vulnerabilities in images and rank them by network exposure"}
	cmd.AddCommand(newScanImageCmd(), newScanClusterCmd())
	return cmd
}

type scanFlags struct {
	db     string
	output string
}

func (f *scanFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.db, "db", vuln.DefaultDir(), "vulnerability database directory ($RAMPART_DB), made by `rampart db import`")
	cmd.Flags().StringVarP(&f.output, "output", "o", "table", "table, json or sarif")
}

func (f *scanFlags) check() error {
	switch f.output {
	case "table", "json", "sarif":
		return nil
	}
	return fmt.Errorf("--output must be table, json or sarif, not %q", f.output)
}

// scanTarget inventories one image and matches it against db.
func scanTarget(ctx context.Context, db *vuln.DB, image, target string) report.Image {
	img := report.Image{Image: image, Target: target, Vulnerabilities: []vuln.Vulnerability{}}
	inv, err := inventory.Scan(ctx, target)
	if err != nil {
		img.Error = err.Error()
		return img
	}
	img.Kind, img.Packages = string(inv.Kind), len(inv.Packages)
	vs, err := db.Match(inv.Packages)
	if err != nil {
		img.Error = err.Error()
		return img
	}
	if vs != nil {
		img.Vulnerabilities = vs
	}
	return img
}

func newScanImageCmd() *cobra.Command {
	var f scanFlags
	cmd := &cobra.Command{
		Use:   "image PATH|REF...",
		Short: "Scan docker-save tarballs, OCI layout directories, root filesystems or registry images",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := f.check(); err != nil {
				return err
			}
			db, err := vuln.Open(f.db)
			if err != nil {
				return err
			}
			defer db.Close()
			var imgs []report.Image
			var errs []error
			bar := newProgress("scanning")
			for i, a := range args {
				bar.Update(i, len(args))
				img := scanTarget(cmd.Context(), db, a, a)
				if img.Error != "" {
					errs = append(errs, fmt.Errorf("%s", img.Error))
					continue
				}
				imgs = append(imgs, img)
			}
			bar.Done()
			if err := writeImages(cmd.OutOrStdout(), f.output, imgs); err != nil {
				return err
			}
			return errors.Join(errs...)
		},
	}
	f.register(cmd)
	return cmd
}

func writeImages(w io.Writer, output string, imgs []report.Image) error {
	switch output {
	case "json":
		if len(imgs) == 1 {
			return report.WriteJSON(w, imgs[0])
		}
		if imgs == nil {
			imgs = []report.Image{}
		}
		return report.WriteJSON(w, imgs)
	case "sarif":
		var items []report.SARIFItem
		for _, img := range imgs {
			items = append(items, report.ImageSARIF(img)...)
		}
		return report.WriteSARIF(w, items)
	}
	for i, img := range imgs {
		if i > 0 {
			fmt.Fprintln(w)
		}
		if err := report.WriteImageTable(w, img); err != nil {
			return err
		}
	}
	return nil
}

func newScanClusterCmd() *cobra.Command {
	var (
		f        scanFlags
		cf       clusterFlags
		images   []string
		noPull   bool
		withPols []string
		replace  bool
	)
	cmd := &cobra.Command{
		Use:   "cluster -f PATH... | --lab NAME | --kubeconfig PATH [--image REF=PATH]... [--with-policies PATH... [--replace]]",
		Short: "Scan every image the cluster's pods run and rank findings by how reachable each pod is under the policies",
		Long: `Scan every image the cluster's pods run and rank findings by how reachable each pod is under
the policies in force.

With --with-policies, findings are ranked as they would be with the given policies added to the
cluster's (or, with --replace, in place of them), and each finding shows its exposure before
and after: which critical findings a policy change takes off the internet.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := f.check(); err != nil {
				return err
			}
			if replace && len(withPols) == 0 {
				return errors.New("--replace needs --with-policies")
			}
			local := map[string]string{}
			for _, m := range images {
				ref, path, ok := strings.Cut(m, "=")
				if !ok || ref == "" || path == "" {
					return fmt.Errorf("--image %q: want REF=PATH", m)
				}
				local[ref] = path
			}
			c, err := cf.load(cmd.Context(), cmd.InOrStdin())
			if err != nil {
				return err
			}
			rs, err := compile.Compile(c)
			if err != nil {
				return err
			}
			var after *policy.Evaluator
			if len(withPols) > 0 {
				ac, err := cf.withProposal(c, withPols, replace, cmd.InOrStdin())
				if err != nil {
					return fmt.Errorf("--with-policies: %w", err)
				}
				ars, err := compile.Compile(ac)
				if err != nil {
					return fmt.Errorf("--with-policies: %w", err)
				}
				after = policy.New(ars)
			}
			db, err := vuln.Open(f.db)
			if err != nil {
				return err
			}
			defer db.Close()
			r := scanCluster(cmd.Context(), db, report.ImagesInUse(c), local, noPull)
			now := exposure.New(policy.New(rs))
			if after != nil {
				r.Findings = report.RankWhatIf(r.Images, now, exposure.New(after))
			} else {
				r.Findings = report.Rank(r.Images, now)
			}
			if r.Findings == nil {
				r.Findings = []report.Finding{}
			}
			if r.Images == nil {
				r.Images = []report.Image{}
			}
			if err := writeCluster(cmd.OutOrStdout(), f.output, r); err != nil {
				return err
			}
			if len(r.Unscanned) > 0 {
				return fmt.Errorf("%d image(s) could not be scanned (map them to local files with --image REF=PATH)", len(r.Unscanned))
			}
			return nil
		},
	}
	f.register(cmd)
	cf.register(cmd)
	cmd.Flags().StringArrayVar(&images, "image", nil, "REF=PATH: scan the local tarball, OCI layout or root filesystem at PATH for image REF; repeatable")
	cmd.Flags().BoolVar(&noPull, "no-pull", false, "never contact a registry: images without --image are reported as not scanned")
	cmd.Flags().StringArrayVar(&withPols, "with-policies", nil, "rank as if these policies (file, directory or -) were in force too; staged ones count as enforced; repeatable")
	cmd.Flags().BoolVar(&replace, "replace", false, "with --with-policies: in place of the cluster's own policies")
	return cmd
}

func scanCluster(ctx context.Context, db *vuln.DB, inUse map[string][]string, local map[string]string, noPull bool) report.Cluster {
	var r report.Cluster
	refs := model.SortedKeys(inUse)
	byTarget := map[string]report.Image{}
	bar := newProgress("scanning images")
	for i, ref := range refs {
		bar.Update(i, len(refs))
		target, ok := local[ref]
		if !ok && noPull {
			r.Unscanned = append(r.Unscanned, report.Image{Image: ref, Pods: inUse[ref], Error: "no local file given and --no-pull set"})
			continue
		}
		if !ok {
			target = ref
		}
		img, done := byTarget[target]
		if !done {
			tctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
			img = scanTarget(tctx, db, ref, target)
			cancel()
			byTarget[target] = img
		}
		img.Image, img.Pods = ref, inUse[ref]
		if img.Error != "" {
			r.Unscanned = append(r.Unscanned, img)
			continue
		}
		r.Images = append(r.Images, img)
	}
	bar.Done()
	return r
}

func writeCluster(w io.Writer, output string, r report.Cluster) error {
	switch output {
	case "json":
		return report.WriteJSON(w, r)
	case "sarif":
		return report.WriteSARIF(w, report.ClusterSARIF(r))
	}
	return report.WriteClusterTable(w, r)
}
