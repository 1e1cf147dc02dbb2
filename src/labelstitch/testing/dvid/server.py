"""The HTTP side of the test server: routing, faults, the threaded server and ``main``."""

from __future__ import annotations

import argparse
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import numpy as np


from .keyvalue import KeyvalueCalls
from .tarsupervoxels import TarsupervoxelsCalls
from .labelmap import LabelmapCalls
from .roi import RoiCalls
from .state import InstanceCall, DvidHTTPError, DvidState, Faults, _Node, _bad, _json, _flag, BLOCK_TYPES
from .voxels import VoxelCalls

__all__ = ["DvidTestServer", "main"]


class _Handler(VoxelCalls, LabelmapCalls, RoiCalls, KeyvalueCalls, TarsupervoxelsCalls, BaseHTTPRequestHandler):
    """Routes a request to the calls of its instance's type (one module each)."""

    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet by default
        if self.server.verbose:
            super().log_message(format, *args)

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def do_HEAD(self) -> None:
        self._handle("HEAD")

    def _reply(self, status: int, body: bytes, content_type: str) -> None:
        with self.server.state.lock:
            self.server.state.status_counts[status] = self.server.state.status_counts.get(status, 0) + 1
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _handle(self, method: str) -> None:
        state = self.server.state
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0 or length > state.max_body_bytes:
            self.close_connection = True  # the body is not read: the connection cannot be reused
            if length < 0:
                self._reply(400, b"bad Content-Length header", "text/plain")
            else:
                self._reply(413, f"request body of {length} bytes is over this server's limit of "
                                 f"{state.max_body_bytes} bytes".encode(), "text/plain")
            return
        body = self.rfile.read(length) if length else b""
        url = urlsplit(self.path)
        params = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        parts = [unquote(p) for p in url.path.split("/") if p]
        state.log.append((method, url.path, params))
        faults = state.faults
        if parts[:1] == ["api"] and (faults.delay or faults.error_rate or faults.drop_rate or faults.stall_rate):
            if faults.delay:
                time.sleep(faults.delay)
            with state.lock:
                draw = faults.rng.random()
            if draw < faults.drop_rate:
                self.close_connection = True  # no reply at all: the client sees a dropped connection
                return
            if draw < faults.drop_rate + faults.error_rate:
                self._reply(503, b"DVID server is unavailable (injected fault)", "text/plain")
                return
            if draw < faults.drop_rate + faults.error_rate + faults.stall_rate:
                with state.lock:
                    faults.stalled += 1
                time.sleep(faults.stall)
        try:
            if parts[:1] != ["api"]:
                raise DvidHTTPError(404, f"Could not find the URL: {url.path}")
            status, payload, ctype = self._route(method, parts[1:], params, body)
        except DvidHTTPError as exc:
            status, payload, ctype = exc.status, exc.message.encode(), "text/plain"
        except Exception as exc:  # a bug in this server: say so instead of hanging the client
            status, payload, ctype = 500, f"test server error: {type(exc).__name__}: {exc}".encode(), "text/plain"
        if isinstance(payload, (dict, list)):
            payload, ctype = json.dumps(payload).encode(), "application/json"
        self._reply(status, payload, ctype)

    # ---------------------------------------------------------------- routing

    def _route(self, method: str, parts: list[str], params: dict[str, str], body: bytes) -> tuple[int, Any, str]:
        state = self.server.state
        unmatched = DvidHTTPError(404, f"Could not find the URL: /api/{'/'.join(parts)}")
        if parts == ["repos"] and method == "POST":
            spec = _json(body) or {}
            return 200, {"root": state.new_repo(spec.get("alias", ""), spec.get("description", ""))}, ""
        if parts == ["repos", "info"] and method == "GET":
            with state.lock:
                return 200, {root: state.repo_info(root) for root in state.repos}, ""
        if parts[:1] == ["server"]:
            if parts[1:] == ["info"] and method == "GET":
                return 200, {"Server": "labelstitch DVID test server", "Max Throttled Ops": state.max_throttled_ops}, ""
            if parts[1:] == ["settings"] and method == "POST":
                spec = _json(body) or {}
                if "throttle" in spec:
                    state.max_throttled_ops = int(spec["throttle"])
                return 200, {"result": "settings changed"}, ""
            raise unmatched
        if parts[:1] == ["repo"] and len(parts) >= 2:
            node = state.node(parts[1])
            if len(parts) == 2 and method == "HEAD":
                return 200, b"", "text/plain"
            if parts[2:] == ["info"] and method == "GET":
                with state.lock:
                    return 200, state.repo_info(node.root), ""
            if parts[2:] == ["instance"] and method == "POST":
                spec = _json(body)
                if not isinstance(spec, dict):
                    raise _bad("instance creation needs a JSON object body")
                return 200, {"result": state.add_instance(node, spec)}, ""
            raise unmatched
        if parts[:1] != ["node"] or len(parts) < 3:
            raise unmatched
        node = state.node(parts[1])
        if len(parts) == 3:
            return self._node_call(method, node, parts[2], body, unmatched)
        inst = state.instance(node, parts[2])
        if method in ("POST", "DELETE") and node.locked and not (inst.typename == "roi" and parts[3:] == ["ptquery"]):
            raise _bad(f"Cannot do {method} on locked node {node.uuid}")
        if parts[3:] == ["info"] and method == "GET":
            with state.lock:
                return 200, state.info(inst, node), ""
        if parts[3:] == ["sync"] and method == "POST":
            spec = _json(body) or {}
            names = [n for n in str(spec.get("sync", "")).split(",") if n]
            for name in names:
                state.instance(node, name)
            inst.syncs = names if params.get("replace") == "true" else inst.syncs + [n for n in names if n not in inst.syncs]
            return 200, b"", "text/plain"
        throttled = _flag(params, "throttle")
        if throttled:
            with state.throttle_lock:
                if state.faults.force_503 > 0:
                    state.faults.force_503 -= 1
                    raise DvidHTTPError(503, "Server is throttled (forced by the test hook)")
                if state.active_throttled >= state.max_throttled_ops:
                    raise DvidHTTPError(
                        503,
                        f"Server already running {state.active_throttled} throttled operations "
                        f"(max = {state.max_throttled_ops})",
                    )
                state.active_throttled += 1
        try:
            call = InstanceCall(method, node, inst, parts[3:], params, body, unmatched)
            if inst.typename in BLOCK_TYPES:
                return self._voxels(call)
            if inst.typename == "roi":
                return self._roi(call)
            if inst.typename == "keyvalue":
                return self._keyvalue(call)
            if inst.typename == "tarsupervoxels":
                return self._tarsupervoxels(call)
            raise unmatched
        finally:
            if throttled:
                with state.throttle_lock:
                    state.active_throttled -= 1

    def _node_call(self, method: str, node: _Node, call: str, body: bytes, unmatched: DvidHTTPError) -> tuple[int, Any, str]:
        state = self.server.state
        if call in ("commit", "status") and method == "GET":
            return 200, {"Locked": node.locked}, ""
        if call == "commit" and method == "POST":
            with state.lock:
                if node.locked:
                    raise _bad(f"node {node.uuid} has already been committed")
                node.locked = True
            return 200, {"committed": node.uuid}, ""
        if call in ("newversion", "branch") and method == "POST":
            spec = _json(body) or {}
            branch = None
            if call == "branch":
                branch = str(spec.get("branch", ""))
            return 200, {"child": state.child(node, str(spec.get("note", "")), branch)}, ""
        raise unmatched


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], state: DvidState, verbose: bool) -> None:
        self.state = state
        self.verbose = verbose
        self.connections: set[socket.socket] = set()
        super().__init__(address, _Handler)

    def get_request(self) -> tuple[socket.socket, Any]:
        conn, addr = super().get_request()
        self.connections.add(conn)
        return conn, addr

    def shutdown_request(self, request: Any) -> None:
        self.connections.discard(request)
        super().shutdown_request(request)

    def drop_connections(self) -> None:
        """Cut every open (keep-alive) connection, as a server that goes down does."""
        for conn in list(self.connections):
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class DvidTestServer:
    """The server on ``host:port`` (port 0: a free one) in a background thread.

    ``stop()`` and ``start()`` again keep the data and the port, so a test can take the
    server down and bring it back. ``state.faults`` sets injected faults.
    """

    def __init__(self, port: int = 0, *, host: str = "127.0.0.1", state: DvidState | None = None, verbose: bool = False):
        self.host = host
        self.port = port
        self.state = state or DvidState()
        self.verbose = verbose
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> str:
        """``HOST:PORT``, as DVID configs write it."""
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}/api"

    @property
    def faults(self) -> Faults:
        return self.state.faults

    def start(self) -> DvidTestServer:
        self._httpd = _Server((self.host, self.port), self.state, self.verbose)
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd.drop_connections()
            assert self._thread is not None
            self._thread.join()
            self._httpd = None

    def new_repo(self, alias: str = "") -> str:
        """A new repo's root UUID (what ``POST /api/repos`` returns)."""
        return self.state.new_repo(alias)

    def __enter__(self) -> DvidTestServer:
        return self.start() if self._httpd is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _load_grayscale(spec: str) -> np.ndarray:
    """``FILE.npy`` or ``FILE.npz[:KEY]`` (default key ``raw``) as a uint8 (Z, Y, X) array."""
    path, key = spec, ""
    if spec.rsplit(":", 1)[0].endswith(".npz") and ":" in spec:
        path, key = spec.rsplit(":", 1)
    data = np.load(path)
    if isinstance(data, np.lib.npyio.NpzFile):
        names = list(data.keys())
        key = key or ("raw" if "raw" in names else names[0])
        if key not in names:
            raise SystemExit(f"{path} has no array {key!r}; it has {', '.join(names)}")
        data = data[key]
    if data.ndim != 3 or data.dtype != np.uint8:
        raise SystemExit(f"{spec}: grayscale must be a 3-D uint8 array, got {data.ndim}-D {data.dtype}")
    return data


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m labelstitch.testing.dvid", description="Serve the labelstitch DVID test server (in memory)."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--repo", action="store_true", help="create one repo at start and print its UUID")
    parser.add_argument(
        "--grayscale",
        metavar="FILE[:KEY]",
        help="create a repo holding this uint8 volume (.npy, or .npz with KEY, default raw) as the uint8blk "
        "instance 'grayscale', zero-padded to whole 32-voxel blocks, and print a config to segment it",
    )
    parser.add_argument("--throttle", type=int, default=1, help="max concurrent throttled requests (DVID's default: 1)")
    parser.add_argument("--verbose", action="store_true", help="log every request")
    args = parser.parse_args(argv)
    gray = _load_grayscale(args.grayscale) if args.grayscale else None
    server = DvidTestServer(args.port, host=args.host, state=DvidState(max_throttled_ops=args.throttle), verbose=args.verbose)
    server.start()
    print(f"DVID test server on http://{server.address}/api (Ctrl-C to stop)", flush=True)
    if args.repo or gray is not None:
        root = server.new_repo("labelstitch")
        print(f"repo root UUID: {root}", flush=True)
    if gray is not None:
        state = server.state
        node = state.node(root)
        state.add_instance(node, {"typename": "uint8blk", "dataname": "grayscale"})
        padded = np.zeros(tuple(-(-n // 32) * 32 for n in gray.shape), np.uint8)
        padded[tuple(slice(0, n) for n in gray.shape)] = gray
        state.write(state.instance(node, "grayscale"), node, (0, 0, 0), padded)
        config = {
            "dvid-info": {"dvid-server": server.address, "uuid": root[:8], "segmentation-name": "segmentation",
                          "grayscale": "grayscale"},
            "options": {"chunk-size": 64, "overlap": 8},
        }
        print(f"grayscale {gray.shape} stored as {padded.shape}; segment it with this config "
              f"(labelstitch run CONFIG --create-output):\n{json.dumps(config)}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
