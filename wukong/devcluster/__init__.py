"""A local, real Kubernetes control plane for development and tests.

`wukong dev up` runs etcd 3.5 and a kube-apiserver built from the pinned
Kubernetes release (see `binaries`), with certificates and a kubeconfig
generated here (see `pki`, `kubeconfig`). Integration tests and the demo stand
on it; nothing in it is mocked.
"""

from wukong.devcluster.cluster import (
    ControlPlane,
    ControlPlaneConfig,
    Status,
    ephemeral_control_plane,
)
from wukong.devcluster.errors import DevClusterError

__all__ = [
    "ControlPlane",
    "ControlPlaneConfig",
    "DevClusterError",
    "Status",
    "ephemeral_control_plane",
]
