"""The ``labelstitch`` command line: argument parsing over the public API, nothing more."""
