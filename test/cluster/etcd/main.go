// Command etcd is the etcd server of the test cluster, built from the go.etcd.io/etcd/server/v3
// module at the version the Kubernetes module pins (upstream's own main, nothing changed).
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
