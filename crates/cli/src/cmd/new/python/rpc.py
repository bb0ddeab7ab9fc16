"""{{name}}: an rpc extension in Python. The module `app` defines one class per export of the
world (see wit/world.wit): `Handler.call` gets the method name and the input bytes and returns
bytes; `raise Err(CallError(code, message))` is the call's error. Every method must also be
listed in extension.toml.

- `greet`: the input is `{"name": "..."}`, a JSON string or plain text; the answer is
  `{"greeting":"Hello, NAME!"}`.
- anything else: the error `not-found`.
"""

import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports.types import CallError


class Handler(exports.Handler):
    def call(self, method: str, input: bytes) -> bytes:
        if method == "greet":
            return greet(input)
        raise Err(CallError("not-found", f'no method "{method}"'))


def greet(input: bytes) -> bytes:
    try:
        text = input.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise Err(CallError("bad-input", "input must be UTF-8"))
    name = text or "world"
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if isinstance(value, str):
        name = value
    elif isinstance(value, dict):
        if not isinstance(value.get("name"), str):
            raise Err(CallError("bad-input", 'expected {"name": "..."}'))
        name = value["name"]
    answer = {"greeting": f"Hello, {name}!"}
    return json.dumps(answer, separators=(",", ":"), ensure_ascii=False).encode()
