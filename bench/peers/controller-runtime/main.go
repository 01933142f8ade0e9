// A controller-runtime controller doing what the benchmark's other peers do,
// reporting each reconcile as a JSON line on stdout so the harness measures
// every peer the same way:
//
//	{"event": "ready", "t": <unix seconds>}            caches synced
//	{"event": "reconcile", "name": "...", "t": ...}    a reconcile started (or,
//	                                                   with --status-patch, ended)
//
// Default: a no-op reconcile of ConfigMaps. With --status-patch: objects of
// the benchmark's custom resource, each read from the cache and given one
// status merge patch (the work of a real reconcile, for capacity and CPU).
//
// With --reconcile-timeout (controller-runtime's ReconciliationTimeout), every
// reconcile outlasts its deadline: it waits for its context to end and counts
// why in its own metric, peer_reconcile_cancellations_total{reason}, served
// with controller-runtime's on --metrics-bind-address. The node agent's count
// for this process is checked against it.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
)

type reporter struct {
	mu  sync.Mutex
	out *json.Encoder
}

func (r *reporter) emit(fields map[string]any) {
	fields["t"] = float64(time.Now().UnixNano()) / 1e9
	r.mu.Lock()
	defer r.mu.Unlock()
	_ = r.out.Encode(fields)
}

type statusPatcher struct {
	client.Client
	report *reporter
	tag    string
}

func (s *statusPatcher) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	obj := benchObject()
	if err := s.Get(ctx, req.NamespacedName, obj); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	patch := fmt.Sprintf(`{"status":{"observedBy":%q,"observedGeneration":%d}}`, s.tag, obj.GetGeneration())
	if err := s.Status().Patch(ctx, obj, client.RawPatch(types.MergePatchType, []byte(patch))); err != nil {
		return reconcile.Result{}, err
	}
	s.report.emit(map[string]any{"event": "reconcile", "name": req.Name})
	return reconcile.Result{}, nil
}

func benchObject() *unstructured.Unstructured {
	obj := &unstructured.Unstructured{}
	obj.SetGroupVersionKind(schema.GroupVersionKind{
		Group: "bench.novasphere.dev", Version: "v1", Kind: "BenchObject",
	})
	return obj
}

type noop struct {
	report       *reporter
	requeueAfter time.Duration
}

func (n *noop) Reconcile(_ context.Context, req reconcile.Request) (reconcile.Result, error) {
	n.report.emit(map[string]any{"event": "reconcile", "name": req.Name})
	return reconcile.Result{RequeueAfter: n.requeueAfter}, nil
}

// cancellations counts the reconciles whose context ended before they did, by
// the context's error: what the controller itself knows of its cancellations.
var cancellations = prometheus.NewCounterVec(prometheus.CounterOpts{
	Name: "peer_reconcile_cancellations_total",
	Help: "Reconciles that saw their context end, by its error.",
}, []string{"reason"})

// outlast waits for each reconcile's context to end (its ReconciliationTimeout)
// under a context derived from it, as a request in flight has one (net/http's
// transport derives it): the deadline reaches it by propagation.
type outlast struct {
	report *reporter
}

func (o *outlast) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	work, cancel := context.WithCancel(ctx)
	defer cancel()
	<-work.Done()
	reason := "canceled" // the manager stopping: the controller's context ended
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		reason = "deadline_exceeded"
	}
	cancellations.WithLabelValues(reason).Inc()
	o.report.emit(map[string]any{"event": "reconcile", "name": req.Name, "reason": reason})
	// No error: a timed-out object is not retried, so each object is one timeout.
	return reconcile.Result{}, nil
}

func main() {
	// --kubeconfig is registered by controller-runtime itself (ctrl.GetConfig).
	namespace := flag.String("namespace", "", "namespace to watch")
	workers := flag.Int("workers", 4, "max concurrent reconciles")
	requeueAfter := flag.Duration("requeue-after", 0, "RequeueAfter of every reconcile")
	statusPatch := flag.Bool("status-patch", false, "reconcile BenchObjects: read from the cache, patch status")
	benchObjects := flag.Bool("bench-objects", false, "reconcile BenchObjects, not ConfigMaps (no-op: cache scale)")
	tag := flag.String("tag", "controller-runtime", "value written to status.observedBy")
	reconcileTimeout := flag.Duration("reconcile-timeout", 0,
		"ReconciliationTimeout; each reconcile then waits until it ends them (counted in peer_reconcile_cancellations_total)")
	metricsAddress := flag.String("metrics-bind-address", "0", "controller-runtime's metrics endpoint (0: off)")
	flag.Parse()
	if *reconcileTimeout > 0 && *statusPatch {
		fmt.Fprintln(os.Stderr, "--reconcile-timeout replaces the reconcile: not with --status-patch")
		os.Exit(2)
	}
	log.SetLogger(zap.New(zap.WriteTo(os.Stderr)))

	config, err := ctrl.GetConfig()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	// The same client-side rate limits as Wukong's client (none): the API
	// server is local and the benchmark measures the controllers.
	config.QPS, config.Burst = 1000, 2000
	mgr, err := ctrl.NewManager(config, ctrl.Options{
		Cache: cache.Options{DefaultNamespaces: map[string]cache.Config{*namespace: {}}},
		// Reads of unstructured objects come from the cache too, as typed ones do.
		Client:                 client.Options{Cache: &client.CacheOptions{Unstructured: true}},
		Metrics:                metricsserver.Options{BindAddress: *metricsAddress},
		HealthProbeBindAddress: "0",
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	report := &reporter{out: json.NewEncoder(os.Stdout)}
	var primary client.Object = &corev1.ConfigMap{}
	if *statusPatch || *benchObjects {
		primary = benchObject()
	}
	options := controller.Options{MaxConcurrentReconciles: *workers}
	var reconciler reconcile.Reconciler = &noop{report: report, requeueAfter: *requeueAfter}
	switch {
	case *statusPatch:
		reconciler = &statusPatcher{Client: mgr.GetClient(), report: report, tag: *tag}
	case *reconcileTimeout > 0:
		options.ReconciliationTimeout = *reconcileTimeout
		metrics.Registry.MustRegister(cancellations)
		reconciler = &outlast{report: report}
	}
	err = ctrl.NewControllerManagedBy(mgr).For(primary).WithOptions(options).Complete(reconciler)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	ctx := ctrl.SetupSignalHandler()
	// Register the primary's informer now, so that WaitForCacheSync below waits
	// for its initial list (controllers only ask for it once they start), and
	// "ready" means the same as for the other peers: the cache is synced.
	if _, err := mgr.GetCache().GetInformer(ctx, primary); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	go func() {
		if mgr.GetCache().WaitForCacheSync(ctx) {
			report.emit(map[string]any{"event": "ready"})
		}
	}()
	if err := mgr.Start(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
