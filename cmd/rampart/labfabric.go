package main

import (
	"fmt"
	"net"

	"github.com/rampart-sec/rampart/internal/lab/controller"
)

// newFabric returns the kernel machinery of a lab (package lab).
func newFabric(name string) (controller.Fabric, error) {
	return nil, fmt.Errorf("lab fabric not available yet")
}

// teardownFabric removes every namespace and link a lab created, by name prefix.
func teardownFabric(name string) error { return nil }

func listenUnix(path string) (net.Listener, error) { return net.Listen("unix", path) }
