// Command pause is the sandbox ("pause") container of the dev node's pods:
// it holds the pod's namespaces, reaps orphaned children and exits on
// SIGINT/SIGTERM. No registry is reachable here, so the node's containerd
// gets this image built locally instead of registry.k8s.io/pause.
// Pure Go with no cgo: the binary is static and the image holds nothing else.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	signals := make(chan os.Signal, 4)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for sig := range signals {
		if sig != syscall.SIGCHLD {
			os.Exit(0)
		}
		// Reap every exited child: as PID 1 of the pod, orphans land here.
		for {
			var status syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
