"""Every function of a Go binary from its pclntab, for binaries without a symbol table.

`go build -ldflags="-s -w"` drops `.symtab`, but the runtime needs the
function table for tracebacks, so `.gopclntab` stays. Its layout (Go 1.18
on, little-endian, 8-byte pointers): a header (magic, pad, pad, minLC,
ptrSize, then nfunc, nfiles, an unused word that once held the text start,
and the offsets of funcnametab, cutab, filetab, pctab and pclntab), then at
pclntab the functab: nfunc pairs (entryoff, funcoff) of uint32 and a
sentinel entryoff at the end of the text, then each function's `_func`
(entryOff uint32, nameOff int32 into funcnametab, ..., funcID and flag bytes).

Entry offsets count from the module's text start, which the header no
longer holds (it would need a relocation). The runtime's moduledata does:
its first word points at the pclntab header and its `text` word follows a
fixed run of slices. It is found in the writable sections and checked
against the functab's first and last entry. `.text`'s own address is not
it: an externally linked binary puts the C start-up code first.
"""

import struct

from elftools.elf.elffile import ELFFile

# magic -> offset of `flag` in _func: Go 1.20 added startLine before it.
_FLAG_OFFSET = {0xFFFFFFF0: 37, 0xFFFFFFF1: 41}  # Go 1.18 and 1.19; Go 1.20 on
_OLDER_MAGICS = (0xFFFFFFFB, 0xFFFFFFFA)  # Go 1.2 to 1.15, 1.16 and 1.17
_HEADER = struct.Struct("<IBBBB8Q")
_PAIR = struct.Struct("<II")
_FUNC = struct.Struct("<Ii")  # entryOff, nameOff
_FLAG_ASM = 4  # abi.FuncFlagAsm
# moduledata: pcHeader, 6 slices (funcnametab ... ftab), findfunctab, minpc,
# maxpc, text: the same from Go 1.16 on.
_MODULEDATA = struct.Struct("<23Q")
_MINPC, _MAXPC, _TEXT = 20, 21, 22  # indices into _MODULEDATA


def go_functions(elf: ELFFile) -> dict[str, tuple[int, int]]:
    """name -> (address, size) of every Go function, from `.gopclntab`.

    A function's size runs to the next one's entry (its alignment padding
    included). An assembly function and the ABI wrapper that shares its name
    (or a Go function and its ABI0 wrapper) are told apart as the linker's
    symbol table does: the ABI0 one is `<name>.abi0`.
    Raises ValueError, with the reason, for a table this does not read.
    """
    section = elf.get_section_by_name(".gopclntab")
    if section is None:
        raise ValueError("no .gopclntab section")
    table: bytes = section.data()
    if len(table) < _HEADER.size:
        raise ValueError(".gopclntab is truncated")
    magic, _, _, _, ptr_size, *words = _HEADER.unpack_from(table)
    if magic not in _FLAG_OFFSET:
        known = "a Go release before 1.18" if magic in _OLDER_MAGICS else "unknown"
        raise ValueError(f"pclntab magic {magic:#x}: {known}")
    if ptr_size != 8:
        raise ValueError(f"pclntab of a {8 * ptr_size}-bit binary")
    nfunc, _, _, funcnames, _, _, _, functab = words
    try:
        return _functions(
            elf, section["sh_addr"], table, nfunc, funcnames, functab, _FLAG_OFFSET[magic]
        )
    except (struct.error, IndexError) as exc:
        raise ValueError(f"malformed .gopclntab ({exc})") from None


def _functions(
    elf: ELFFile,
    header: int,
    table: bytes,
    nfunc: int,
    funcnames: int,
    functab: int,
    flag_offset: int,
) -> dict[str, tuple[int, int]]:
    pairs = [_PAIR.unpack_from(table, functab + 8 * index) for index in range(nfunc + 1)]
    entries = [entry for entry, _ in pairs]
    text = _text_start(elf, header, funcnames, entries)

    functions: dict[str, tuple[int, int]] = {}
    assembly: set[str] = set()
    for index, (entry, func) in enumerate(pairs[:-1]):
        _, name_offset = _FUNC.unpack_from(table, functab + func)
        start = funcnames + name_offset
        name = table[start : table.index(b"\0", start)].decode(errors="replace")
        symbol = (text + entry, entries[index + 1] - entry)
        is_asm = bool(table[functab + func + flag_offset] & _FLAG_ASM)
        if name not in functions:
            functions[name] = symbol
            if is_asm:
                assembly.add(name)
        elif name in assembly:  # the assembly one came first: it is the ABI0 twin
            functions[name + ".abi0"] = functions[name]
            functions[name] = symbol
        else:
            functions[name + ".abi0"] = symbol
    return functions


def _text_start(elf: ELFFile, header: int, funcnames: int, entries: list[int]) -> int:
    """moduledata.text, from the moduledata whose first word points at `header`."""
    pointer = header.to_bytes(8, "little")
    for section in elf.iter_sections():
        if section["sh_type"] != "SHT_PROGBITS" or not section["sh_flags"] & 1:  # SHF_WRITE
            continue
        data: bytes = section.data()
        at = data.find(pointer)
        while at >= 0:
            if at % 8 == 0 and at + _MODULEDATA.size <= len(data):
                words = _MODULEDATA.unpack_from(data, at)
                text = words[_TEXT]
                if (
                    words[1] == header + funcnames
                    and words[_MINPC] == text + entries[0]
                    and words[_MAXPC] == text + entries[-1]
                ):
                    return int(text)
            at = data.find(pointer, at + 1)
    raise ValueError("no runtime moduledata points at the pclntab")
