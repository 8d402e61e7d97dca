"""The `interp` command. One module per subcommand in this package, each defining

    HELP: str                                   # one line for `interp --help`
    def add_arguments(p: argparse.ArgumentParser) -> None
    def run(args: argparse.Namespace) -> int     # exit status

A `UserError` anywhere becomes one line on stderr and exit status 2, with no traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from types import ModuleType
from typing import Any

from interp.errors import UserError

# Subcommand name -> module under interp.cli. Add a line here to add a command; a name whose
# module is an earlier command's (e.g. "patch" -> "patching") is that command's alias.
COMMANDS: dict[str, str] = {
    "train": "train",
    "evaluate": "evaluate",
    "lens": "lens",
    "patching": "patching",
    "patch": "patching",  # older name of `patching`
    "probing": "probing",
    "probe": "probing",  # older name of `probing`
    "update": "update",
    "dynamics": "dynamics",
    "selective": "selective",
    "storage": "storage",
    "study": "study",
    "sweep": "sweep",
}


def _available() -> dict[str, Any]:
    mods = {}
    for name, module in COMMANDS.items():
        try:
            mods[name] = importlib.import_module(f"interp.cli.{module}")
        except ModuleNotFoundError as e:
            if e.name != f"interp.cli.{module}":
                raise
    return mods


def add_set_argument(p: argparse.ArgumentParser, help: str) -> None:
    """`--set KEY=VALUE [KEY=VALUE ...]`, repeatable, collected into `args.overrides`."""
    p.add_argument(
        "--set", dest="overrides", action="extend", nargs="+", default=[], metavar="KEY=VALUE",
        help=help,
    )  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="interp",
        description="Train small GPTs on synthetic 'A is B' facts and study the reversal curse.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    names: dict[ModuleType, list[str]] = {}  # module -> its command names, the first one primary
    for name, mod in _available().items():
        names.setdefault(mod, []).append(name)
    for mod, (name, *aliases) in names.items():
        p = sub.add_parser(
            name,
            aliases=aliases,
            help=mod.HELP,
            description=mod.HELP,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        mod.add_arguments(p)  # type: ignore[attr-defined]
        p.set_defaults(_run=mod.run)  # type: ignore[attr-defined]
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
