"""The names Wukong derives from a Wukong's name, and the limits that keep them valid.

A Wukong's VirtualMachine (and so its instance) has the Wukong's name; every
object Wukong creates carries the label `vm.novasphere.dev/wukong: <name>`; a
disk's claim (or DataVolume) is `<wukong>-<disk>`, a created network's
NetworkAttachmentDefinition `<wukong>-<network>`.

Rather than shorten names with a hash, the CRD rejects a Wukong whose derived
names cannot be valid (`NAME_RULES`, CEL on `metadata.name`), so every name
stays the one a person would guess:

- the Wukong's name is a DNS label of at most 63 characters: it is a label
  value and the VirtualMachine's name (KubeVirt makes it the guest's hostname);
- `<wukong>-<disk>` and `<wukong>-<network>` are at most 63 characters too:
  Multus accepts only DNS labels as NetworkAttachmentDefinition names, and CDI
  puts a DataVolume's name in label values;
- disk and network names have no `-` (`child_name_rule`). With one, two Wukongs
  could derive the same name (`a` with disk `b-c` and `a-b` with disk `c` both
  give claim `a-b-c`); without, the last `-` of a derived name separates the
  Wukong's part from the child's, so no two Wukongs share a child name.

A Wukong that the API server stored before these rules (validation ratcheting
keeps it) and whose names cannot be valid is reported with `InvalidName` or
`NameTooLong` by the controller (`name_problem`); it can still be deleted. A
stored child name with a `-` keeps working: should another Wukong's name
meet it, the object is not controlled by the second Wukong, which reports
`NameConflict` and never touches it.
"""

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # names is imported by api, which the views are built from
    from wukong.operator.views import WukongView

# Longest DNS label: names of VMs and NADs, and any label value.
MAX_LABEL = 63
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def child_name(wukong_name: str, child: str) -> str:
    """The claim, DataVolume or NetworkAttachmentDefinition of a Wukong's disk or network."""
    return f"{wukong_name}-{child}"


def is_label_value(value: str) -> bool:
    """Whether `value` may be used as a label value (and so in a label selector)."""
    return value == "" or (len(value) <= MAX_LABEL and bool(_DNS_LABEL.match(value)))


# Rules on the whole object: only there can CEL see `metadata.name`.
NAME_RULES: list[dict[str, str]] = [
    {
        "rule": f"size(self.metadata.name) <= {MAX_LABEL}",
        "message": f"metadata.name must be at most {MAX_LABEL} characters: it names the "
        "VirtualMachine and is a label value on everything the Wukong creates",
    },
    {
        "rule": "self.metadata.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')",
        "message": "metadata.name must be a DNS label (lowercase letters, digits and '-', "
        "no '.'): it names the VirtualMachine and the guest's hostname",
    },
    {
        "rule": "!has(self.spec) || !has(self.spec.disks) || self.spec.disks.all(d, "
        f"size(self.metadata.name) + 1 + size(d.name) <= {MAX_LABEL})",
        "message": f"each disk's claim is named <wukong>-<disk> and must be at most {MAX_LABEL} "
        "characters: shorten the Wukong's name or the disk's",
    },
    {
        "rule": "!has(self.spec) || !has(self.spec.networks) || self.spec.networks.all(n, "
        f"!has(n.config) || size(self.metadata.name) + 1 + size(n.name) <= {MAX_LABEL})",
        "message": "a network with config creates NetworkAttachmentDefinition "
        f"<wukong>-<network>, which must be at most {MAX_LABEL} characters: shorten the "
        "Wukong's name or the network's",
    },
]


def child_name_rule(what: str) -> dict[str, str]:
    """The CEL rule on a disk's or network's name: no '-' (see the module docstring)."""
    return {
        "rule": "!self.contains('-')",
        "message": f"a {what} name has no '-': Wukong names its object <wukong>-<{what}>, "
        f"and a '-' in the {what} name would let two Wukongs derive the same name",
    }


def name_problem(wukong: "WukongView") -> tuple[str, str] | None:
    """(reason, message) when a stored Wukong's derived names cannot be valid.

    The CRD rejects such Wukongs; this catches the ones stored before it did.
    """
    name = wukong.name
    if not is_label_value(name):
        return (
            "InvalidName",
            f"metadata.name {name!r} is not a DNS label of at most "
            f"{MAX_LABEL} characters; recreate the Wukong under a shorter name",
        )
    children = [("disk", d.name) for d in wukong.spec.disks] + [
        ("network", n.name) for n in wukong.spec.networks if n.nad_name is None
    ]
    for what, child in children:
        derived = child_name(name, child)
        if len(derived) > MAX_LABEL:
            return (
                "NameTooLong",
                f"{what} {child}: the name {derived} is longer than "
                f"{MAX_LABEL} characters; shorten the Wukong's name or the {what}'s",
            )
    return None
