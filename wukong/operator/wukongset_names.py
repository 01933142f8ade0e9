"""The names of a WukongSet's members, and the limits that keep them valid.

A member is the Wukong `<set>-<ordinal>` (ordinals from 0): stable names a
person can guess, never a hash. A member's name obeys the Wukong's own rules
(`names`): a DNS label of at most 63 characters, and `<member>-<disk>` and
`<member>-<network>` (a network with `config`) of at most 63 too. So, as for
a Wukong, the CRD refuses a set whose members' names could not be valid
(`SET_NAME_RULES`, reckoning with as many digits as `replicas` has), with a
message giving the limit; and the controller reports a stored set that slips
through (`set_name_problem`) with `InvalidName` or `NameTooLong`, creating no
member whose name would not fit.
"""

from wukong.operator.names import MAX_LABEL, child_name, is_label_value
from wukong.operator.wukongset_api import WukongSetSpec


def member_name(set_name: str, ordinal: int) -> str:
    """The Wukong of the set's member `ordinal`."""
    return f"{set_name}-{ordinal}"


def member_ordinal(set_name: str, wukong_name: str) -> int | None:
    """The ordinal of member `wukong_name`, None when it is not named as a member."""
    prefix = f"{set_name}-"
    suffix = wukong_name.removeprefix(prefix)
    if suffix == wukong_name or not suffix.isdigit() or str(int(suffix)) != suffix:
        return None
    return int(suffix)


# The longest member name a set of `replicas` derives has this many characters
# beyond the set's name: '-' and the digits of its highest ordinal (at most
# those of `replicas`).
_MEMBER_SUFFIX = "1 + size(string(self.spec.replicas))"
_MEMBER = f"size(self.metadata.name) + {_MEMBER_SUFFIX}"

# Rules on the whole object: only there can CEL see `metadata.name`.
SET_NAME_RULES: list[dict[str, str]] = [
    {
        "rule": "self.metadata.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')",
        "message": "metadata.name must be a DNS label (lowercase letters, digits and '-', "
        "no '.'): it begins the name of every member Wukong",
    },
    {
        "rule": f"!has(self.spec) || {_MEMBER} <= {MAX_LABEL}",
        "message": f"members are named <set>-<ordinal>, at most {MAX_LABEL} characters: "
        "shorten the WukongSet's name (or lower replicas)",
    },
    {
        "rule": "!has(self.spec) || !has(self.spec.template.spec.disks) || "
        f"self.spec.template.spec.disks.all(d, {_MEMBER} + 1 + size(d.name) <= {MAX_LABEL})",
        "message": "each member's disk claim is named <set>-<ordinal>-<disk>, at most "
        f"{MAX_LABEL} characters: shorten the WukongSet's name or the disk's",
    },
    {
        "rule": "!has(self.spec) || !has(self.spec.template.spec.networks) || "
        "self.spec.template.spec.networks.all(n, !has(n.config) || "
        f"{_MEMBER} + 1 + size(n.name) <= {MAX_LABEL})",
        "message": "a network with config creates NetworkAttachmentDefinition "
        f"<set>-<ordinal>-<network>, at most {MAX_LABEL} characters: shorten the "
        "WukongSet's name or the network's",
    },
]


def set_name_problem(set_name: str, spec: WukongSetSpec, ordinal: int) -> tuple[str, str] | None:
    """(reason, message) when member `ordinal` of a stored set could not have valid names.

    The CRD rejects such sets; this catches the ones stored before it did.
    """
    if not is_label_value(set_name):
        return (
            "InvalidName",
            f"metadata.name {set_name!r} is not a DNS label; recreate the WukongSet "
            "under a shorter name",
        )
    member = member_name(set_name, ordinal)
    if len(member) > MAX_LABEL:
        return (
            "NameTooLong",
            f"member {member} would be longer than {MAX_LABEL} characters; shorten the "
            "WukongSet's name",
        )
    template = spec.template.spec
    children = [("disk", d.name) for d in template.disks] + [
        ("network", n.name) for n in template.networks if n.nad_name is None
    ]
    for what, child in children:
        derived = child_name(member, child)
        if len(derived) > MAX_LABEL:
            return (
                "NameTooLong",
                f"{what} {child} of member {member}: the name {derived} is longer than "
                f"{MAX_LABEL} characters; shorten the WukongSet's name or the {what}'s",
            )
    return None
