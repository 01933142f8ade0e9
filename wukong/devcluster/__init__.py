"""A local, real Kubernetes control plane for development and tests.

`wukong dev up` runs etcd and a kube-apiserver, both built from pinned
releases (see `binaries`), with certificates and a kubeconfig
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
