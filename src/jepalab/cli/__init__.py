"""The ``jepalab`` command line: one dispatch table (:mod:`jepalab.cli.dispatch`), one module per
command (``train``, ``plan``, ``probe``, ``surprise``), shared argument handling
(:mod:`jepalab.cli.args`) and compose-time checks (:mod:`jepalab.cli.validate`)."""

from jepalab.cli.dispatch import main

__all__ = ["main"]
