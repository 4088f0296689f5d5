// Command mkimage builds the rampart agent's OCI image as a tarball, without Docker or a
// registry: one layer holding the rampart binary and the programs the iptables dataplane runs
// (iptables-nft, ipset, nsenter) with their shared libraries, copied from this machine's Debian
// packages; the image config sets the entrypoint. The tarball is in docker-save format, which
// `ctr images import` and `docker load` take.
//
//	go run ./scripts/mkimage -o bin/rampart-image.tar -t localhost/rampart:dev ROOTFS
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

func main() {
	out := flag.String("o", "bin/rampart-image.tar", "output tarball")
	tag := flag.String("t", "localhost/rampart:dev", "image reference")
	layer := flag.String("layer", "", "the layer: a tar of the image's root filesystem")
	flag.Parse()
	if err := run(*out, *tag, *layer); err != nil {
		fmt.Fprintln(os.Stderr, "mkimage:", err)
		os.Exit(1)
	}
}

func run(out, tag, layerTar string) error {
	ref, err := name.NewTag(tag)
	if err != nil {
		return err
	}
	l, err := tarball.LayerFromFile(layerTar)
	if err != nil {
		return err
	}
	img, err := mutate.AppendLayers(empty.Image, l)
	if err != nil {
		return err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return err
	}
	cf = cf.DeepCopy()
	cf.Architecture, cf.OS = "amd64", "linux"
	cf.Config = v1.Config{
		Entrypoint: []string{"/usr/local/bin/rampart"},
		Cmd:        []string{"agent"},
		Env:        []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
		Labels:     map[string]string{"org.opencontainers.image.title": "rampart"},
	}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		return err
	}
	return tarball.WriteToFile(out, ref, img)
}
