"""The `interp` command. `COMMANDS` names every subcommand, the module under interp.cli that
implements it and its one-line help; a subcommand's module is imported only when it is chosen
(the library behind it imports torch and transformer-lens, seconds of work that `interp --help`
should not pay). Each module defines

    def add_arguments(p: argparse.ArgumentParser, command: str) -> None
    def run(args: argparse.Namespace) -> int     # exit status; args.command is the command

A `UserError` anywhere becomes one line on stderr and exit status 2, with no traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from interp.errors import UserError, disk_full, disk_full_line

# command -> (module under interp.cli, one-line help). The instruments share one module.
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("train", "train a small GPT from scratch on a fact world and evaluate it"),
    "behaviour": (
        "instrument",
        "evaluate a run: exact match per subset x direction x templates, and the log-prob test",
    ),
    "lens": (
        "instrument",
        "logit lens of a run: rank of the answer's first token per layer at A's last token, "
        "B's last token and the final prompt position, forward vs reverse, with controls",
    ),
    "patching": ("instrument", "activation patching (causal tracing) of a run"),
    "probing": ("instrument", "linear probes on entity-alone representations, with controls"),
    "update": (
        "instrument",
        "the gradient-update test: one step on 'A is B', what moves forward and in reverse",
    ),
    "dynamics": ("instrument", "exact match, probes and lens over a run's checkpoints"),
    "selective": (
        "instrument",
        "selective prediction (ASPIRE): does the model know when its answer is wrong?",
    ),
    "storage": (
        "instrument",
        "where a fact is stored (biography world): Q-, reverse Q- and P-probes and QA",
    ),
    "qk": ("instrument", "QK symmetry: is each head's W_Q W_K^T symmetric (Saponati et al.)?"),
    "export": (
        "export",
        "write a run as a Hugging Face transformers model directory (AutoModelForCausalLM)",
    ),
    "study": (
        "study",
        "run a whole study (a preset: runs, every instrument, figures, report, findings)",
    ),
    "sweep": (
        "sweep",
        "sweep a grid of runs locally or on Slurm (submitit) and aggregate them with intervals",
    ),
}
ALIASES = {"evaluate": "behaviour", "patch": "patching", "probe": "probing"}  # older names


def add_set_argument(p: argparse.ArgumentParser, help: str) -> None:
    """`--set KEY=VALUE [KEY=VALUE ...]`, repeatable, collected into `args.overrides`."""
    p.add_argument(
        "--set", dest="overrides", action="extend", nargs="+", default=[], metavar="KEY=VALUE",
        help=help,
    )  # fmt: skip


def top_parser() -> argparse.ArgumentParser:
    """`interp` and its subcommands with their help (no subcommand's module imported)."""
    parser = argparse.ArgumentParser(
        prog="interp",
        description="Train small GPTs on synthetic 'A is B' facts and study the reversal curse.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help) in COMMANDS.items():
        aliases = [a for a, n in ALIASES.items() if n == name]
        sub.add_parser(name, aliases=aliases, help=help, add_help=False)
    return parser


def command_parser(command: str) -> argparse.ArgumentParser:
    """The full parser of one subcommand (its module imported)."""
    module, help = COMMANDS[command]
    mod = importlib.import_module(f"interp.cli.{module}")
    p = argparse.ArgumentParser(
        prog=f"interp {command}",
        description=help,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    mod.add_arguments(p, command)
    p.set_defaults(command=command, _run=mod.run)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = ALIASES.get(argv[0], argv[0]) if argv else None
    if command not in COMMANDS:
        top = top_parser()
        if argv and not argv[0].startswith("-"):
            top.parse_args(argv[:1])  # argparse's own "invalid choice" line, exit status 2
        top.print_help()
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    args = command_parser(command).parse_args(argv[1:])
    try:
        return int(args._run(args) or 0)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if not disk_full(e):
            raise
        print(f"error: {disk_full_line(e)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
