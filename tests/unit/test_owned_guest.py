"""Which VM and instance of the Wukong's name are the Wukong's own."""

from wukong.operator.kubevirt import owned_guest
from wukong.operator.views import parse_wukong


def _obj(uid: str, controller: str | None = None, kind: str = "Wukong") -> dict[str, object]:
    ref = {"kind": kind, "name": "x", "uid": controller, "controller": True}
    refs = [ref] if controller else []
    return {"metadata": {"name": "db", "uid": uid, "ownerReferences": refs}}


WUKONG = parse_wukong(_obj("w"))


def test_our_vm_and_its_instance_are_ours() -> None:
    vm, vmi = _obj("vm", "w"), _obj("vmi", "vm", kind="VirtualMachine")
    own = owned_guest(WUKONG, vm, vmi)
    assert (own.vm, own.vmi, own.conflict) == (vm, vmi, None)


def test_a_foreign_vm_is_a_conflict_and_its_instance_is_not_read() -> None:
    own = owned_guest(WUKONG, _obj("vm"), _obj("vmi", "vm", kind="VirtualMachine"))
    assert own.vm is None and own.vmi is None
    assert own.conflict is not None and own.conflict.reason == "NameConflict"
    assert "no owner" in own.conflict.message


def test_an_instance_our_vm_does_not_control_is_a_conflict() -> None:
    vm = _obj("vm", "w")
    own = owned_guest(WUKONG, vm, _obj("vmi"))
    assert own.vm is vm and own.vmi is None
    assert own.conflict is not None and "VirtualMachineInstance db" in own.conflict.message


def test_an_instance_before_our_vm_exists_is_not_ours_yet() -> None:
    own = owned_guest(WUKONG, None, _obj("vmi", "other", kind="VirtualMachine"))
    assert (own.vm, own.vmi, own.conflict) == (None, None, None)
