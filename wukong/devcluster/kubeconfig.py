"""A self-contained kubeconfig for the local control plane's admin user.

Certificates are embedded (`*-data`), so the file can be copied or mounted
anywhere and `kubectl --kubeconfig "$(wukong dev kubeconfig)"` just works.
"""

import base64
from pathlib import Path

import yaml

from wukong.devcluster.pki import Pki

CONTEXT = "wukong-dev"


def write_kubeconfig(path: Path, *, server: str, pki: Pki) -> None:
    def b64(file: Path) -> str:
        return base64.b64encode(file.read_bytes()).decode()

    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": CONTEXT,
                "cluster": {"server": server, "certificate-authority-data": b64(pki.ca_cert)},
            }
        ],
        "users": [
            {
                "name": "wukong-admin",
                "user": {
                    "client-certificate-data": b64(pki.admin_cert),
                    "client-key-data": b64(pki.admin_key),
                },
            }
        ],
        "contexts": [
            {
                "name": CONTEXT,
                "context": {"cluster": CONTEXT, "user": "wukong-admin", "namespace": "default"},
            }
        ],
        "current-context": CONTEXT,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)


def kubeconfig_via(source: Path, target: Path, *, port: int) -> Path:
    """A copy of `source` whose server is 127.0.0.1:`port` (e.g. a latency proxy).

    The serving certificate names 127.0.0.1, so TLS still verifies through a TCP proxy.
    """
    config = yaml.safe_load(source.read_text())
    for cluster in config["clusters"]:
        cluster["cluster"]["server"] = f"https://127.0.0.1:{port}"
    target.write_text(yaml.safe_dump(config))
    return target
