"""Prometheus metrics for Wukong operators, with controller-runtime's names.

    from wukong.metrics import MetricsServer, RuntimeMetrics

    metrics = RuntimeMetrics()
    manager = Manager(client=client, observers=[metrics], ...)
    manager.add(controller)
    server = MetricsServer(
        registry=metrics.metrics.registry,
        secure=SecureServing(client=client),  # HTTPS, callers authorized by the API server
    )
    port = await server.start(":8080")       # GET /metrics
    ...
    await server.stop()

See `definitions` for the families and `observers` for how runtime events map
onto them.
"""

from wukong.metrics.definitions import OperatorMetrics, create_metrics
from wukong.metrics.observers import RuntimeMetrics
from wukong.metrics.server import MetricsServer, SecureServing

__all__ = [
    "MetricsServer",
    "OperatorMetrics",
    "RuntimeMetrics",
    "SecureServing",
    "create_metrics",
]
