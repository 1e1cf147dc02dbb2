"""``python -m labelstitch.testing.dvid``: run the test server by hand."""

from .server import main

main()
