// Wrapper module that builds etcd from the Go module proxy for the dev control
// plane, at the release pinned in go.mod (the main package of etcd's own
// repository does exactly this; its module cannot be built with `go install`).
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
