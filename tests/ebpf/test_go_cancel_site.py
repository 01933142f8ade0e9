"""The store site is found in real Go machine code, and anything unlike it falls back to entry.

objdump (binutils) disassembles independently of the agent's byte patterns.
"""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from wukong.devcluster import binaries
from wukong.ebpf.elf import CANCEL_SYMBOL, read_binary, read_code
from wukong.ebpf.go_cancel_site import find_site

PROGRAM = Path(__file__).parent / "programs/cancels"


def _code(path: Path) -> tuple[bytes, int]:
    """The bytes of cancel in the file."""
    start, size = read_binary(path).symbols[CANCEL_SYMBOL]
    return read_code(path, start, size), start


@pytest.mark.skipif(shutil.which("objdump") is None, reason="needs binutils' objdump")
def test_the_site_is_the_call_that_stores_the_error() -> None:
    path = binaries.go_program(PROGRAM, name="test-cancels", progress=print)
    binary = read_binary(path)
    code, start = _code(path)
    site = find_site(binary, code)
    assert site.function == "on_store" and not site.why
    window = [f"--start-address={site.address:#x}", f"--stop-address={site.address + 5:#x}"]
    listing = subprocess.run(
        ["objdump", "-d", *window, str(path)], capture_output=True, text=True, check=True
    ).stdout
    assert re.search(r"call\s+[0-9a-f]+ <sync/atomic\.\(\*Value\)\.Store>", listing), listing
    assert start < site.address < start + len(code)


def test_code_unlike_go_1_21_falls_back_to_the_entry() -> None:
    path = binaries.go_program(PROGRAM, name="test-cancels", progress=print)
    binary = read_binary(path)
    code, start = _code(path)
    no_prologue = find_site(binary, code.replace(b"\x55\x48\x89\xe5", b"\x90" * 4, 1))
    assert (no_prologue.function, no_prologue.address) == ("on_entry", start)
    assert "prologue" in no_prologue.why
    no_store = find_site(binary, code.replace(b"\xe8", b"\x90"))
    assert no_store.function == "on_entry" and "Store" in no_store.why
