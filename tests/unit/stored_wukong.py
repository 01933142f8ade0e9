"""A Wukong as the API server stores it, with a status and a Ready condition, for the
tests of what the controller reads."""

STORED = {
    "metadata": {
        "name": "web",
        "namespace": "ns",
        "uid": "u1",
        "generation": 3,
        "resourceVersion": "42",
        "finalizers": ["vm.novasphere.dev/finalizer"],
    },
    "spec": {
        "memory": "2Gi",
        "networks": [{"name": "data", "config": "{}"}, {"name": "lan", "nadName": "shared"}],
        "disks": [{"name": "root", "size": "10Gi", "image": "docker://x", "unknown": 1}],
    },
    "status": {
        "phase": "Running",
        "migration": {"name": "m", "phase": "Running"},
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "Running",
                "message": "running on n1",
                "lastTransitionTime": "2026-01-01T00:00:00Z",
                "observedGeneration": 3,
            }
        ],
    },
}
