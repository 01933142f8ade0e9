"""A controller of ConfigMaps run as the manager runs one, without an API server."""

from wukong.runtime import Client, Controller, ControllerOptions, RuntimeObserver
from wukong.runtime._fanout import ObserverFanout
from wukong.runtime._running import RunningController
from wukong.runtime.resources import CONFIGMAPS


def configmap_controller(
    reconciler: object,
    client: Client,
    *observers: RuntimeObserver,
    workers: int | None = None,
) -> RunningController:
    """Controller "c" of ConfigMaps running `reconciler` with `observers`, 2 s a
    reconcile, on `workers` workers (the default when None)."""
    options = (
        ControllerOptions()
        if workers is None
        else ControllerOptions(max_concurrent_reconciles=workers)
    )
    return RunningController(
        Controller(name="c", reconciler=reconciler, primary=CONFIGMAPS, options=options),  # type: ignore[arg-type]
        client=client,
        observer=ObserverFanout(list(observers)),
        reconcile_timeout=2.0,
    )
