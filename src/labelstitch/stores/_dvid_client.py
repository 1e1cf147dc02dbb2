"""The DVID client: addresses, one pooled HTTP session per process, and retried calls.

Every process keeps one pooled ``requests.Session``. Every call has a timeout, carries
``u=`` and ``app=``, and heavy calls ask for ``throttle=on``. Connection errors, timeouts
and 5xx replies are retried with jittered exponential backoff; a busy server's 503 ("already
running N throttled operations") is normal under load and has a larger budget of its own.
DVID's 4xx replies are not retried and their message is passed on.
The retry policy comes from environment variables, so worker processes share it:

==================================  =========  =========================================
``LABELSTITCH_DVID_RETRIES``        8          retries of failures (no reply, 5xx)
``LABELSTITCH_DVID_BUSY_RETRIES``   40         retries of "too many throttled ops" 503s
``LABELSTITCH_DVID_BACKOFF``        0.5        longest first pause (s); doubles each time
``LABELSTITCH_DVID_MAX_BACKOFF``    60         cap of a pause (s)
``LABELSTITCH_DVID_TIMEOUT``        300        seconds to wait for a reply (connect: 10)
``LABELSTITCH_DVID_USER``           login      the ``u=`` parameter
==================================  =========  =========================================

The store (:mod:`labelstitch.stores._dvid`) is built on these calls; nothing here knows
about volumes.
"""

from __future__ import annotations

import getpass
import json
import os
import random
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from ._base import StoreError

__all__ = ["DvidAddress", "DvidError", "RETRY_HINT", "dvid_request", "instance_info", "node_locked", "zyx"]

RETRY_HINT = "the run can be continued with `labelstitch run CONFIG --resume` once the server answers"


class DvidError(StoreError):
    """A DVID call failed: the URL, the status (None: no reply) and DVID's message."""

    def __init__(self, message: str, *, url: str = "", status: int | None = None) -> None:
        super().__init__(message)
        self.url = url
        self.status = status


@dataclass(frozen=True)
class DvidAddress:
    """The parts of a ``dvid://HOST:PORT/UUID/NAME[?k=v...]`` string."""

    server: str
    uuid: str
    name: str
    query: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, uri: str) -> DvidAddress:
        parts = urlsplit(uri)
        path = [p for p in parts.path.split("/") if p]
        if parts.scheme != "dvid" or not parts.netloc or len(path) != 2:
            raise StoreError(
                f"{uri!r} is not a DVID volume; write dvid://HOST:PORT/UUID/INSTANCE "
                "(for example dvid://127.0.0.1:8000/3f8c/grayscale)"
            )
        query = tuple(sorted((k, v[-1]) for k, v in parse_qs(parts.query, keep_blank_values=True).items()))
        known = {"roi", "type", "blocksize", "mutate", "write", "supervoxels", "maxdownreslevel"}
        unknown = [k for k, _ in query if k not in known]
        if unknown:
            raise StoreError(f"{uri}: unknown option(s) {', '.join(unknown)}; a DVID volume takes {', '.join(sorted(known))}")
        values = dict(query)
        allowed = {"write": ("supervoxels", "bodies"), "supervoxels": ("true", "false")}
        for key, choices in allowed.items():
            if key in values and values[key] not in choices:
                raise StoreError(f"{uri}: {key}={values[key]!r}; use {' or '.join(choices)}")
        if "maxdownreslevel" in values and not (values["maxdownreslevel"].isdigit() and int(values["maxdownreslevel"]) <= 255):
            raise StoreError(f"{uri}: maxdownreslevel={values['maxdownreslevel']!r}; use a whole number 0..255")
        return cls(parts.netloc, path[0], path[1], query)

    @property
    def options(self) -> dict[str, str]:
        return dict(self.query)

    def with_options(self, **options: str | None) -> DvidAddress:
        merged = {**self.options, **options}
        return DvidAddress(self.server, self.uuid, self.name, tuple(sorted((k, v) for k, v in merged.items() if v is not None)))

    @property
    def uri(self) -> str:
        tail = f"?{urlencode(self.query)}" if self.query else ""
        return f"dvid://{self.server}/{self.uuid}/{self.name}{tail}"

    def sibling(self, name: str) -> DvidAddress:
        """Another instance at the same server and node."""
        return DvidAddress(self.server, self.uuid, name)

    @property
    def node_path(self) -> str:
        return f"node/{self.uuid}/{self.name}"


_SESSIONS: dict[int, Any] = {}


def _session() -> Any:
    """This process's pooled session (a forked or spawned worker makes its own)."""
    import requests

    pid = os.getpid()
    if pid not in _SESSIONS:
        session = requests.Session()
        adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=16)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        _SESSIONS.clear()
        _SESSIONS[pid] = session
    return _SESSIONS[pid]


def _env(name: str, default: float) -> float:
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        return float(value)
    except ValueError:
        raise StoreError(f"environment variable {name}={value!r} is not a number") from None


def _base_url(server: str) -> str:
    return server if server.startswith(("http://", "https://")) else f"http://{server}"


def dvid_request(
    server: str,
    method: str,
    path: str,
    *,
    params: dict[str, Any] | None = None,
    data: bytes | None = None,
    json_body: Any = None,
    throttle: bool = False,
    expect: tuple[int, ...] = (200, 206),
) -> Any:
    """One DVID call (``path`` below ``/api/``), retried on connection errors, timeouts and
    5xx replies with jittered exponential backoff. Returns the ``requests.Response``.

    Raises
    ------
    DvidError
        A reply outside ``expect`` that is not retried (DVID's message included), or the
        last failure once the retries are spent.
    """
    import requests

    retries = int(_env("LABELSTITCH_DVID_RETRIES", 8))
    busy_retries = int(_env("LABELSTITCH_DVID_BUSY_RETRIES", 40))
    backoff = _env("LABELSTITCH_DVID_BACKOFF", 0.5)
    cap = _env("LABELSTITCH_DVID_MAX_BACKOFF", 60.0)
    timeout = (10.0, _env("LABELSTITCH_DVID_TIMEOUT", 300.0))
    query = {"u": os.environ.get("LABELSTITCH_DVID_USER") or _user(), "app": "labelstitch", **(params or {})}
    if throttle:
        query["throttle"] = "on"
    url = f"{_base_url(server)}/api/{path}"
    body = json.dumps(json_body).encode() if json_body is not None else data
    failure = ""
    status: int | None = None
    failures = busy = 0  # a busy server (503 to a throttled call) has its own, larger budget
    while True:
        try:
            reply = _session().request(method, url, params=query, data=body, timeout=timeout)
        except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as exc:
            status, failure = None, f"{type(exc).__name__}: {exc}"
            failures += 1
        else:
            if reply.status_code in expect:
                return reply
            status, failure = reply.status_code, reply.text.strip()[:500]
            if reply.status_code < 500:
                raise DvidError(f"DVID refused {method} {url}: {status} {failure}", url=url, status=status)
            if throttle and status == 503 and "throttled" in failure:
                busy += 1
            else:
                failures += 1
        if failures > retries or busy > busy_retries:
            break
        pause = backoff * 2 ** (max(failures, busy) - 1)
        time.sleep(random.uniform(0, min(cap, pause)))  # full jitter: workers spread out
    raise DvidError(
        f"DVID call {method} {url} failed after {failures + busy} attempts; last: "
        f"{status if status is not None else 'no reply'} {failure}; {RETRY_HINT}",
        url=url,
        status=status,
    )


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no login name in some containers
        return "labelstitch"


def instance_info(address: DvidAddress) -> dict[str, Any] | None:
    """The instance's ``info`` JSON, checked, or None if DVID says it has no such instance (400).

    Raises
    ------
    DvidError
        The reply is not JSON, or not an instance description (``Base.TypeName`` and
        ``Extended``, with three whole numbers in ``BlockSize`` and ``MaxPoint`` where given).
    """
    path = f"{address.node_path}/info"
    try:
        reply = dvid_request(address.server, "GET", path)
    except DvidError as exc:
        if exc.status == 400:
            return None
        raise
    url = f"{_base_url(address.server)}/{path}"
    try:
        info = reply.json()
    except ValueError:
        raise DvidError(f"DVID's reply to GET {url} is not JSON: {reply.text[:80]!r}", url=url) from None

    def bad(what: str) -> DvidError:
        return DvidError(f"DVID's reply to GET {url} is not an instance description: {what}", url=url)

    if not isinstance(info, dict) or not isinstance(info.get("Base"), dict) or not isinstance(info["Base"].get("TypeName"), str):
        raise bad("no Base.TypeName")
    if not isinstance(info.get("Extended"), dict):
        raise bad("no Extended section")
    for key in ("BlockSize", "MaxPoint", "MinPoint"):
        value = info["Extended"].get(key)
        if value is not None and not (
            isinstance(value, list) and len(value) == 3 and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        ):
            raise bad(f"Extended.{key} is {value!r}, not three whole numbers")
    return info  # type: ignore[no-any-return]


def node_locked(address: DvidAddress) -> bool:
    """Whether the address's node is committed (DVID refuses writes to it)."""
    return bool(dvid_request(address.server, "GET", f"node/{address.uuid}/commit").json().get("Locked"))


def zyx(values: list[int]) -> tuple[int, int, int]:
    """DVID's X, Y, Z order as labelstitch's Z, Y, X."""
    return int(values[2]), int(values[1]), int(values[0])
