"""kv-counter in Python: the same extension as examples/kv-counter (Rust), with the same
outputs and the same errors (codes and messages).

Methods (plain-text input and output):
- `increment`: input `NAME` or `NAME DELTA` (default delta 1; empty name = `hits`); returns
  the new value (`wasi:keyvalue/atomics`, so concurrent calls never lose a count).
- `get`: input `NAME`; returns the value (`0` if never incremented).
- `ping`: input an `http://` or `https://` URL; GETs it and returns the response status.
"""

import re

from componentize_py_types import Err, Ok
from wit_world import exports
from wit_world.imports import atomics, outgoing_handler, store
from wit_world.imports import wasi_http_types as http
from wit_world.imports.warden_extension_types import CallError

U64_MAX = 2**64 - 1


def error(code: str, message: str) -> Err:
    return Err(CallError(code, message))


class Handler(exports.Handler):
    def call(self, method: str, input: bytes) -> bytes:
        # The method is looked at first, so an unknown one is `not-found` whatever the input.
        if method in ("increment", "get"):
            return count(method, input)
        if method == "ping":
            return ping(input)
        raise error("not-found", f'no method "{method}"')


def count(method: str, input: bytes) -> bytes:
    try:
        text = input.decode("utf-8")
    except UnicodeDecodeError:
        raise error("bad-input", "input must be UTF-8")
    parts = text.split()
    name = parts[0] if parts else "hits"
    delta = 1
    if method == "increment" and len(parts) > 1:
        if not parts[1].isascii() or not parts[1].isdigit() or int(parts[1]) > U64_MAX:
            raise error("bad-input", "delta must be a u64")
        delta = int(parts[1])
    try:
        bucket = store.open("default")
        if method == "increment":
            value = atomics.increment(bucket, name, delta)
        else:
            raw = bucket.get(name)
            if raw is None:
                value = 0
            else:
                try:
                    value = int(raw.decode("ascii"))
                except (UnicodeDecodeError, ValueError):
                    raise error("corrupt", "the counter is not a number")
    except Err as e:
        raise kv_error(e.value)
    return str(value).encode()


def kv_error(e) -> Err:
    if isinstance(e, store.Error_AccessDenied):
        return error("denied", "key-value access is not granted")
    if isinstance(e, store.Error_NoSuchStore):
        return error("kv", "no such store")
    if isinstance(e, store.Error_Other):
        return error("kv", e.value)
    return e if isinstance(e, Err) else error("kv", str(e))


URL = re.compile(
    r"(https?)://([A-Za-z0-9.-]+)(?::([0-9]+))?(/[A-Za-z0-9\-._~!$&'()*+,;=:@/?%]*)?"
)


def ping(input: bytes) -> bytes:
    bad_input = error("bad-input", "input must be an http or https URL")
    try:
        url = input.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise bad_input
    m = URL.fullmatch(url)
    if m is None or (m.group(3) is not None and int(m.group(3)) > 65535):
        raise bad_input
    scheme, host, port, path = m.group(1), m.group(2), m.group(3), m.group(4) or "/"
    authority = host if port is None else f"{host}:{port}"
    request = http.OutgoingRequest(http.Fields())
    request.set_scheme(http.Scheme_Https() if scheme == "https" else http.Scheme_Http())
    request.set_authority(authority)
    request.set_path_with_query(path)
    try:
        future = outgoing_handler.handle(request, None)
        future.subscribe().block()
        result = future.get()
    except Err as e:
        raise http_error(e.value)
    if isinstance(result, Ok) and isinstance(result.value, Ok):
        return str(result.value.value.status()).encode()
    if isinstance(result, Ok) and isinstance(result.value, Err):
        raise http_error(result.value.value)
    raise error("fetch", "the request failed")


def http_error(e) -> Err:
    # Fixed messages: the details differ between HTTP stacks, the category does not.
    if isinstance(e, http.ErrorCode_HttpRequestDenied):
        return error("denied", "the host refused the request")
    return error("fetch", "the request failed")
