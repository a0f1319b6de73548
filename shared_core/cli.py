"""The `extradim` command line.

Subcommands come from two places: the core's own (below) and the `extradim.commands` entry-point
group, through which `video`, `threed` and the extension packages in `packages/` add theirs. The
core never imports a modality: it only calls the `register(subparsers)` function an entry point
names. A broken extension is reported loudly, never swallowed: one that fails to import (say, an
evaluation target whose module needs a package of an extra that is not installed) still gets its
subcommand, which exits with the import error as one line whatever its arguments, and every other
subcommand keeps working. A dependency missing at run time (modalities import their heavy packages
lazily) is also one line naming the module, not a traceback.

`extradim eval TARGET` works the same way one level down: each entry point of the
`extradim.evals` group names a `register(eval_subparsers)` that adds one evaluation target
(e.g. `extradim eval video`). `extradim eval` alone prints the list.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from importlib.metadata import entry_points

from shared_core import __version__
from shared_core.errors import ExtradimError, first_line

Register = Callable[[argparse._SubParsersAction], None]


def _core_commands() -> list[tuple[str, Register]]:
    from shared_core import toy

    commands: list[tuple[str, Register]] = [("demo", toy.register_cli), ("eval", _register_eval)]
    try:
        from shared_core.train import cli as train_cli
    except ImportError:  # the engine module is optional while it is being built
        return commands
    commands.append(("train", train_cli.register_cli))
    return commands


def _unavailable(name: str, message: str) -> Register:
    """A stand-in subcommand for an extension that failed to import: any use exits with ``message``."""

    def register(sub: argparse._SubParsersAction) -> None:
        # No prefix characters and no -h: every argument, "--seed" and "--help" included, is taken
        # by the catch-all positional, so any use reaches `fail`.
        help_text = f"(unavailable: {message})".replace("%", "%%")
        p = sub.add_parser(name, help=help_text, add_help=False, prefix_chars="\x00")
        p.add_argument("args", nargs=argparse.REMAINDER)

        def fail(_: argparse.Namespace) -> int:
            raise ExtradimError(message)

        p.set_defaults(func=fail)

    return register


def _load_group(group: str, what: str) -> list[tuple[str, Register]]:
    found = []
    for ep in sorted(entry_points(group=group), key=lambda e: e.name):
        try:
            found.append((ep.name, ep.load()))
        except Exception as exc:  # an extension that fails to import must say so, not vanish
            message = f"extension {what} {ep.name!r} ({ep.value}) failed to load: {first_line(exc)}"
            found.append((ep.name, _unavailable(ep.name, message)))
    return found


def _plugin_commands() -> list[tuple[str, Register]]:
    return _load_group("extradim.commands", "command")


def _plugin_evals() -> list[tuple[str, Register]]:
    return _load_group("extradim.evals", "eval")


def _register_eval(sub: argparse._SubParsersAction) -> None:
    """`extradim eval TARGET ...`: one sub-subcommand per `extradim.evals` entry point."""
    p = sub.add_parser("eval", help="evaluate a trained model (targets come from the extradim.evals group)")
    targets = p.add_subparsers(dest="eval_target", metavar="TARGET")
    for _, register in _plugin_evals():
        register(targets)

    def no_target(_: argparse.Namespace) -> int:
        p.print_help()
        return 0

    p.set_defaults(func=no_target)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="extradim",
        description="Diffusion beyond still images: video and 3-D on one shared core.",
    )
    parser.add_argument("--version", action="version", version=f"extradim {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for _, register in _core_commands() + _plugin_commands():
        register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if getattr(args, "func", None) is None:
            parser.print_help()
            return 0
        return int(args.func(args) or 0)
    except ExtradimError as exc:
        print(f"extradim: error: {exc}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:  # an optional dependency (an extra) that is not installed
        print(
            f"extradim: error: {exc}; install the extra that provides it (README, Install)", file=sys.stderr
        )
        return 2
    except KeyboardInterrupt:
        print("extradim: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
