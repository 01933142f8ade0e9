"""Where in `context.(*cancelCtx).cancel` only effective cancellations pass.

Since Go 1.21 the function reads `if c.err.Load() != nil { return }` under
its lock, then calls `c.err.Store(err)`: the first call to
`sync/atomic.(*Value).Store` in its body. A uprobe on that call instruction
fires once per context that really ends, never for a cancel() of a context
already cancelled (every deferred cancel of a finished request), so those
cost no trap. The location is found in the machine code, not assumed from a
Go version, and each fact the BPF program relies on is checked:

- the call's target is `sync/atomic.(*Value).Store`, its receiver built by a
  `lea 0x30(reg), rax` just before (c.err is at offset 48: go_probe.c);
- the prologue sets up the frame pointer (`push rbp; mov rbp, rsp; sub N, rsp`)
  and spills the `cause` argument (SI, R8) to its ABI spill slots, where the
  program reads it from the frame pointer.

When any check fails (another compiler's layout), the agent falls back to
an entry uprobe, which traps on every call, and says so.
"""

from dataclasses import dataclass

from wukong.ebpf.elf import CANCEL_SYMBOL, Binary

STORE_SYMBOL = "sync/atomic.(*Value).Store"
_PROLOGUE = b"\x55\x48\x89\xe5"  # push rbp; mov rbp, rsp
_SUB_RSP_IMM8, _SUB_RSP_IMM32 = b"\x48\x83\xec", b"\x48\x81\xec"
_ERR_OFFSET = 0x30
# Word index of `cause`'s two words among cancel's register arguments:
# receiver, removeFromParent, err (2 words), cause (2 words).
_CAUSE_WORD = 4


@dataclass(frozen=True)
class ProbeSite:
    address: int  # ELF virtual address of the probed instruction
    function: str  # the BPF function in go_probe.c
    why: str  # for the operator: why this point (and not the better one)


def find_site(binary: Binary, code: bytes) -> ProbeSite:
    """`code`: the bytes of CANCEL_SYMBOL as loaded (its ELF size)."""
    start, _ = binary.symbols[CANCEL_SYMBOL]
    entry = ProbeSite(start, "on_entry", "")
    if STORE_SYMBOL not in binary.symbols:
        return _fallback(entry, f"no {STORE_SYMBOL} in the binary")
    frame = _frame_size(code)
    if frame is None:
        return _fallback(entry, "no frame-pointer prologue")
    # mov rsi / r8, disp32(rsp): the slots sit above the frame, the saved BP
    # and the return address.
    spills = ((_CAUSE_WORD, b"\x48\x89\xb4\x24"), (_CAUSE_WORD + 1, b"\x4c\x89\x84\x24"))
    for word, register in spills:
        disp = frame + 16 + 8 * word
        if register + disp.to_bytes(4, "little") not in code[:96]:
            return _fallback(entry, "cause not spilled to its ABI slot in the prologue")
    store, _ = binary.symbols[STORE_SYMBOL]
    for offset in range(len(code) - 4):
        if code[offset] != 0xE8:
            continue
        relative = int.from_bytes(code[offset + 1 : offset + 5], "little", signed=True)
        target = start + offset + 5 + relative
        if target != store:
            continue
        if not _loads_err_address(code[max(0, offset - 16) : offset]):
            return _fallback(entry, "first Value.Store is not on c.err")
        return ProbeSite(start + offset, "on_store", "")
    return _fallback(entry, f"no call to {STORE_SYMBOL}")


def _fallback(entry: ProbeSite, why: str) -> ProbeSite:
    return ProbeSite(
        entry.address, entry.function, f"{why}: probing its entry (every cancel() traps)"
    )


def _frame_size(code: bytes) -> int | None:
    at = code.find(_PROLOGUE, 0, 32)
    if at < 0:
        return None
    rest = code[at + len(_PROLOGUE) :]
    if rest.startswith(_SUB_RSP_IMM8):
        return rest[3]
    if rest.startswith(_SUB_RSP_IMM32):
        return int.from_bytes(rest[3:7], "little")
    return None


def _loads_err_address(before: bytes) -> bool:
    """`lea 0x30(reg), rax` (REX.W, 8d, mod=01 reg=rax, disp8 0x30) just before."""
    for at in range(len(before) - 3):
        rex, opcode, modrm, disp = before[at : at + 4]
        if (
            rex in (0x48, 0x49)
            and opcode == 0x8D
            and modrm & 0xF8 == 0x40
            and modrm & 7 != 4
            and disp == _ERR_OFFSET
        ):
            return True
    return False
