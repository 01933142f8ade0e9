"""Which container of a pod a process's container ID is, restarts included."""

from typing import Any

from wukong.ebpf.attribution import _container_name

RUNNING = "a" * 64
RESTARTED = "b" * 64  # started a moment ago: the kubelet has not reported it yet


def _pod(*containers: str, init: tuple[str, ...] = (), statuses: dict[str, str]) -> Any:
    return {
        "spec": {
            "containers": [{"name": name} for name in containers],
            **({"initContainers": [{"name": name} for name in init]} if init else {}),
        },
        "status": {
            "containerStatuses": [
                {"name": name, "containerID": f"containerd://{cid}"}
                for name, cid in statuses.items()
            ]
        },
    }


def test_a_reported_container_is_named_by_its_id() -> None:
    pod = _pod("manager", "sidecar", statuses={"manager": RUNNING, "sidecar": "c" * 64})
    assert _container_name(pod, RUNNING) == "manager"


def test_a_restarted_container_of_a_one_container_pod_is_that_container() -> None:
    pod = _pod("controller", statuses={"controller": RUNNING})
    assert _container_name(pod, RESTARTED) == "controller"


def test_an_unreported_container_of_several_is_not_guessed() -> None:
    pod = _pod("manager", "sidecar", statuses={"manager": RUNNING, "sidecar": "c" * 64})
    assert _container_name(pod, RESTARTED) is None
    with_init = _pod("manager", init=("setup",), statuses={"manager": RUNNING})
    assert _container_name(with_init, RESTARTED) is None
