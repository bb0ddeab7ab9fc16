"""The limits part of tests/guests/hostile in Python, with the same methods and outputs:
- `loop`: never returns;
- `grow N`: allocates N MiB in 1 MiB steps and keeps them; answers `grew N`, or the number of
  MiB it had when an allocation failed."""

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports.types import CallError

MIB = 1 << 20


class Handler(exports.Handler):
    def call(self, method: str, input: bytes) -> bytes:
        arg = input.decode("utf-8", "replace").strip()
        if method == "loop":
            i = 0
            while True:
                i = (i + 1) & 0xFFFFFFFF
        if method == "grow":
            if not arg.isascii() or not arg.isdigit():
                raise Err(CallError("bad-input", "expected a decimal number"))
            want = int(arg)
            chunks = []
            failed = False
            while len(chunks) < want:
                try:
                    chunks.append(bytearray(b"\xa5") * MIB)
                except MemoryError:
                    failed = True
                    break
            got = len(chunks)
            chunks = None
            return (str(got) if failed else f"grew {got}").encode()
        raise Err(CallError("not-found", f'no method "{method}"'))
