"""The ``tf-cme`` console command: one subcommand per stage.

``tf-cme NAME ARGS...`` runs ``tf_cme.commands.run(name)`` with ``ARGS`` as the command's
arguments, exactly as ``scripts/NAME.py ARGS...`` does in a checkout. Subcommands are the
module names with hyphens (``tf-cme train-student``); underscores are accepted too.
Nothing here imports TensorFlow: ``tf-cme --help`` and argument errors are instant.
"""
from __future__ import annotations

import sys

from .commands import COMMANDS


def _first_doc_line(name: str) -> str:
    """The first line of scripts/NAME.py's purpose, read from the command module's source
    without importing it (importing could pull in TensorFlow)."""
    import ast
    from importlib.util import find_spec
    spec = find_spec(f"tf_cme.commands.{name}")
    try:
        with open(spec.origin, encoding="utf-8") as f:
            doc = ast.get_docstring(ast.parse(f.read())) or ""
    except (OSError, SyntaxError, AttributeError):
        doc = ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def usage() -> str:
    lines = ["usage: tf-cme COMMAND [ARGS...]   (tf-cme COMMAND --help for a command's options)",
             "", "commands:"]
    for name in COMMANDS:
        lines.append(f"  {name.replace('_', '-'):<20} {_first_doc_line(name)}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        raise SystemExit(0 if argv else 2)
    if argv[0] == "--version":
        from . import __version__
        print(f"tf-cme {__version__}")
        raise SystemExit(0)
    name = argv[0].replace("-", "_")
    if name not in COMMANDS:
        print(usage(), file=sys.stderr)
        print(f"\ntf-cme: error: unknown command {argv[0]!r}", file=sys.stderr)
        raise SystemExit(2)
    from .commands import run
    sys.argv = [f"tf-cme {argv[0].replace('_', '-')}", *argv[1:]]
    run(name)


if __name__ == "__main__":
    main()
