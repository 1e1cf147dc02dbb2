"""A small DVID server, in pure Python, for tests and demos.

It implements the subset of DVID's REST API that a segmentation pipeline uses, following
``shared/docs/dvid-api.md`` (section 8) to the letter: repos and their version DAG
(commit, newversion, branch, copy-on-write by block), ``uint8blk`` grayscale and
``labelblk``/``labelarray``/``labelmap`` labels (raw GET at any geometry, block-aligned raw
POST, uint64 little-endian, raw LZ4 block framing), ``roi`` (runs, partition, ptquery,
mask), ``keyvalue``, ``tarsupervoxels`` (from DVID's own help text), and throttling (``throttle=on``: at most ``max_throttled_ops`` at once,
503 beyond). Status codes are DVID's: 400 for nearly every error, unknown instances
included; 404 only for unmatched routes, missing keys and missing sparse volumes.

For fault tests the server can also answer a share of requests with 503, drop
connections without replying, or answer slowly (see :class:`Faults`).

Run it by hand::

    python -m labelstitch.testing.dvid --port 8000

or from Python (port 0 picks a free port)::

    >>> from labelstitch.testing.dvid import DvidTestServer
    >>> with DvidTestServer() as server:
    ...     server.address.startswith("127.0.0.1:")
    True
"""

from __future__ import annotations

from .server import DvidTestServer, main
from .state import DvidHTTPError, DvidState, Faults

__all__ = ["DvidHTTPError", "DvidState", "DvidTestServer", "Faults", "main"]
