"""``keyvalue`` instances: keys and values."""

from __future__ import annotations

from typing import Any



from .state import Calls, InstanceCall, DvidHTTPError


class KeyvalueCalls(Calls):
    """The calls of these instances (mixed into the request handler)."""

    def _keyvalue(self, call: InstanceCall) -> tuple[int, Any, str]:
        method, node, inst, rest, params, body, unmatched = call.parts()
        state = self.server.state
        with state.lock:
            visible: dict[str, bytes] = {}
            for version in reversed(state.versions(inst, node)):  # oldest first, nearer versions win
                for key, value in inst.keys.get(version, {}).items():
                    if value is None:
                        visible.pop(key, None)
                    else:
                        visible[key] = value
            if rest == ["keys"] and method == "GET":
                return 200, sorted(visible), ""
            if len(rest) == 3 and rest[0] == "keyrange" and method == "GET":
                return 200, sorted(k for k in visible if rest[1] <= k <= rest[2]), ""
            if len(rest) != 2 or rest[0] != "key":
                raise unmatched
            key = rest[1]
            if method in ("GET", "HEAD"):
                if key not in visible:
                    raise DvidHTTPError(404, f"key {key!r} not found")
                return 200, visible[key], "application/octet-stream"
            stored = inst.keys.setdefault(state.write_node(inst, node), {})
            if method == "POST":
                stored[key] = bytes(body)
            elif method == "DELETE":
                stored[key] = None  # a tombstone hides the ancestors' value
            return 200, b"", "text/plain"
