// Command mkimage packs a root filesystem (a tar made by scripts/image.sh or
// scripts/cluster-images.sh) into a one-layer image tarball, without Docker or a registry, and
// sets the entrypoint and command. The tarball is in docker-save format, which
// `ctr images import` and `docker load` take.
//
//	go run ./scripts/mkimage -o bin/rampart-image.tar -t localhost/rampart:dev -layer ROOTFS.tar \
//	    -entrypoint /usr/local/bin/rampart-agent -cmd ""
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"

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
	entry := flag.String("entrypoint", "/usr/local/bin/rampart-agent", "the entrypoint, its words separated by commas")
	cmd := flag.String("cmd", "", "the command (the entrypoint's default arguments), separated by commas")
	flag.Parse()
	if err := run(*out, *tag, *layer, words(*entry), words(*cmd)); err != nil {
		fmt.Fprintln(os.Stderr, "mkimage:", err)
		os.Exit(1)
	}
}

func words(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}

func run(out, tag, layerTar string, entrypoint, cmd []string) error {
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
		Entrypoint: entrypoint,
		Cmd:        cmd,
		Env:        []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
		Labels:     map[string]string{"org.opencontainers.image.title": ref.Context().RepositoryStr()},
	}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		return err
	}
	return tarball.WriteToFile(out, ref, img)
}
