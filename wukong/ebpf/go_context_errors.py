"""Where a Go binary without a symbol table keeps `context.Canceled` and
`context.DeadlineExceeded`.

The pclntab names functions only; these two are global `error` values (two
words each: itab, data) that the probe compares against. Small closures of
package context load exactly one of them, as the `err` argument of a cancel:

    context.WithCancel.func1:       c.cancel(true, Canceled, nil)
    context.WithDeadlineCause.func2: c.cancel(true, DeadlineExceeded, cause)

Go loads a global's two words with two RIP-relative 64-bit moves
(`mov disp32(%rip), reg`), at X and X+8, so X is found in the machine code:
the one 16-byte global such a function loads, inside the binary's data
sections. Every loader present must agree.
"""

from collections.abc import Callable, Sequence

# Each loads only Canceled, since Go 1.21 (WithDeadlineCause.func1 and
# func3 are the two CancelFuncs it returns).
CANCELED_LOADERS = (
    "context.WithCancel.func1",
    "context.WithCancelCause.func1",
    "context.WithDeadlineCause.func1",
    "context.WithDeadlineCause.func3",
)
# The timer's closure, and WithDeadlineCause itself (a deadline already past).
DEADLINE_LOADERS = ("context.WithDeadlineCause.func2", "context.WithDeadlineCause")

ReadCode = Callable[[int, int], bytes]  # (address, size) -> bytes of the file


def interface_global(
    loaders: Sequence[str],
    functions: dict[str, tuple[int, int]],
    read_code: ReadCode,
    data: Sequence[tuple[int, int]],
) -> int:
    """The address of the one interface global that `loaders` load.

    `data`: the (start, end) address ranges of the data sections.
    Raises ValueError, saying why, when no loader is present, one loads
    several, or two disagree.
    """
    found: dict[str, int] = {}
    for name in loaders:
        if name not in functions:
            continue
        start, size = functions[name]
        loaded = _rip_loads(start, read_code(start, size))
        pairs = {
            target
            for target in loaded
            if target + 8 in loaded
            and any(low <= target and target + 16 <= high for low, high in data)
        }
        if len(pairs) == 1:
            found[name] = pairs.pop()
    if not found:
        raise ValueError(f"none of {', '.join(loaders)} loads one global error")
    if len(set(found.values())) > 1:
        where = ", ".join(f"{name} at {address:#x}" for name, address in found.items())
        raise ValueError(f"the context functions disagree: {where}")
    return next(iter(found.values()))


def _rip_loads(start: int, code: bytes) -> set[int]:
    """Targets of `mov disp32(%rip), r64` (REX.W, 8b, mod=00 rm=101) in `code`
    at address `start`. Scanned at every byte, not decoded: a false match must
    also pair with another at +8 inside a data section to count."""
    targets = set()
    for at in range(len(code) - 6):
        if code[at] & 0xF8 == 0x48 and code[at + 1] == 0x8B and code[at + 2] & 0xC7 == 0x05:
            displacement = int.from_bytes(code[at + 3 : at + 7], "little", signed=True)
            targets.add(start + at + 7 + displacement)
    return targets
