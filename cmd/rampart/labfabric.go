package main

import (
	"net"

	"github.com/rampart-sec/rampart/internal/lab/controller"
	"github.com/rampart-sec/rampart/internal/lab/fabric"
)

// newFabric returns the kernel machinery of a lab.
func newFabric(name string) (controller.Fabric, error) { return fabric.New(name), nil }

// teardownFabric removes every namespace a lab created, by name prefix.
func teardownFabric(name string) error { return fabric.TeardownPrefix(fabric.Prefix(name)) }

func listenUnix(path string) (net.Listener, error) { return net.Listen("unix", path) }
