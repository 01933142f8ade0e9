"""A target binary as the agent sees it: symbols, PIE, Go version, context globals.

Read through `/proc/PID/exe`, which reaches the binary even inside another
container's mount namespace. Symbols come from `.symtab`; a Go binary built
without it (`-ldflags=-s`) gets its functions from the pclntab and its two
context errors from the code that loads them, under the same names.
"""

import bisect
from dataclasses import dataclass, field
from pathlib import Path

from elftools.elf.elffile import ELFFile
from elftools.elf.sections import SymbolTableSection

from wukong.ebpf.go_context_errors import CANCELED_LOADERS, DEADLINE_LOADERS, interface_global
from wukong.ebpf.pclntab import go_functions

CANCEL_SYMBOL = "context.(*cancelCtx).cancel"
CANCELED_SYMBOL = "context.Canceled"
DEADLINE_SYMBOL = "context.DeadlineExceeded"
CONTROLLER_RUNTIME_SYMBOL = "sigs.k8s.io/controller-runtime/pkg/internal/controller"
# cancelCtx's `err` field sits at this offset from Go 1.21 on (see go_probe.c).
SUPPORTED_GO = (1, 21)
_BUILDINFO_MAGIC = b"\xff Go buildinf:"
_DATA_SECTIONS = (".data", ".noptrdata", ".bss", ".noptrbss")


@dataclass
class Binary:
    path: str
    pie: bool
    stripped: bool  # no .symtab: the symbols come from Go's pclntab
    go_version: str | None
    symbols_problem: str | None = None  # why the symbols could not be read
    base_vaddr: int = 0  # virtual address of the segment mapped from file offset 0
    symbols: dict[str, tuple[int, int]] = field(default_factory=dict)  # name -> (addr, size)
    _starts: list[int] = field(default_factory=list)
    _names: list[str] = field(default_factory=list)

    @property
    def is_go(self) -> bool:
        return self.go_version is not None

    @property
    def go_supported(self) -> bool:
        version = _parse_go_version(self.go_version)
        return version is not None and version >= SUPPORTED_GO

    @property
    def uses_controller_runtime(self) -> bool:
        return any(name.startswith(CONTROLLER_RUNTIME_SYMBOL) for name in self.symbols)

    def symbolize(self, address: int) -> str:
        """The function containing `address` (an ELF virtual address), or hex."""
        if not self._starts:
            ordered = sorted((addr, name) for name, (addr, _) in self.symbols.items())
            self._starts = [addr for addr, _ in ordered]
            self._names = [name for _, name in ordered]
        index = bisect.bisect_right(self._starts, address) - 1
        if index >= 0:
            name = self._names[index]
            start, size = self.symbols[name]
            if size == 0 or address < start + size:
                return name
        return f"0x{address:x}"


def _parse_go_version(version: str | None) -> tuple[int, int] | None:
    if not version or not version.startswith("go"):
        return None
    parts = version[2:].split(".")
    try:
        return int(parts[0]), int("".join(c for c in parts[1] if c.isdigit()) or 0)
    except (IndexError, ValueError):
        return None


def _go_version(elf: ELFFile) -> str | None:
    section = elf.get_section_by_name(".go.buildinfo")
    if section is None:
        return None
    data = section.data()
    if not data.startswith(_BUILDINFO_MAGIC) or len(data) < 33:
        return "unknown"
    if not data[15] & 2:  # versions before Go 1.18 store pointers here
        return "unknown"
    length, offset, shift = 0, 32, 0
    while offset < len(data):  # a uvarint length, then the version string
        byte = data[offset]
        length |= (byte & 0x7F) << shift
        offset += 1
        shift += 7
        if not byte & 0x80:
            break
    return data[offset : offset + length].decode(errors="replace")


def read_binary(path: str | Path, *, want_symbols: bool = True) -> Binary:
    with open(path, "rb") as stream:
        elf = ELFFile(stream)
        symtab = elf.get_section_by_name(".symtab")
        binary = Binary(
            path=str(path),
            pie=elf.header["e_type"] == "ET_DYN",
            stripped=symtab is None,
            go_version=_go_version(elf),
            base_vaddr=next(
                (
                    segment["p_vaddr"]
                    for segment in elf.iter_segments()
                    if segment["p_type"] == "PT_LOAD" and segment["p_offset"] == 0
                ),
                0,
            ),
        )
        if want_symbols and isinstance(symtab, SymbolTableSection):
            for symbol in symtab.iter_symbols():
                if symbol["st_value"] and symbol.name:
                    binary.symbols[symbol.name] = (symbol["st_value"], symbol["st_size"])
        elif want_symbols and binary.is_go:
            try:
                binary.symbols = go_functions(elf)
                if CANCEL_SYMBOL in binary.symbols:
                    _add_context_errors(binary, elf)
            except ValueError as exc:
                binary.symbols_problem = f"stripped Go binary (built with -ldflags=-s): {exc}"
    return binary


def _add_context_errors(binary: Binary, elf: ELFFile) -> None:
    """The two globals the probe compares against, which the pclntab does not name."""
    data = [
        (section["sh_addr"], section["sh_addr"] + section["sh_size"])
        for section in map(elf.get_section_by_name, _DATA_SECTIONS)
        if section is not None
    ]

    def code(address: int, size: int) -> bytes:
        return read_code(binary.path, address, size)

    for symbol, loaders in (
        (CANCELED_SYMBOL, CANCELED_LOADERS),
        (DEADLINE_SYMBOL, DEADLINE_LOADERS),
    ):
        try:
            binary.symbols[symbol] = (interface_global(loaders, binary.symbols, code, data), 16)
        except ValueError as exc:
            raise ValueError(f"{symbol} not found: {exc}") from None


def load_bias(pid: int, binary: Binary) -> int:
    """What to add to the binary's addresses to get this process's addresses."""
    if not binary.pie:
        return 0
    exe = str(Path(f"/proc/{pid}/exe").readlink())
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        fields = line.split()
        if len(fields) >= 6 and fields[5] == exe and int(fields[2], 16) == 0:
            return int(fields[0].split("-")[0], 16) - binary.base_vaddr
    return 0


def read_code(path: str | Path, address: int, size: int) -> bytes:
    """`size` bytes at ELF virtual address `address`, from the file. Not from the
    process: a uprobe (ours, or another tracer's on the same file) shows there
    as an int3 over the instruction."""
    with open(path, "rb") as stream:
        for segment in ELFFile(stream).iter_segments():
            start = segment["p_vaddr"]
            if segment["p_type"] == "PT_LOAD" and start <= address < start + segment["p_filesz"]:
                stream.seek(segment["p_offset"] + address - start)
                return stream.read(size)
    raise ValueError(f"{path}: no loaded segment holds {address:#x}")


def read_memory(pid: int, address: int, size: int) -> bytes:
    with open(f"/proc/{pid}/mem", "rb") as mem:
        mem.seek(address)
        return mem.read(size)
