"""Command line: one command per experiment kind (``l2rebound epoch``, ``l2rebound noise``, ...) runs it;
``reproduce`` re-creates a published figure, ``sweep`` runs a grid of experiments; ``plot``, ``analyze``,
``check`` and ``align`` work on stored results.

Each command is one module here with an ``add(commands)`` that declares its options and a ``run(args)`` that
carries it out. Every experiment option is generated from a ``Config`` field (its help text, choices and
default), so the config dataclass stays the single source of truth. Bad input ends in one line on stderr and
exit code 2. The CLI owns its process: before it trains it configures JAX for it (``configure_process``);
``--help`` and ``plot`` never load the engine.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import warnings

from l2rebound import __version__
from l2rebound.cli import align, analyze, check, experiment, plot, reproduce, sweep
from l2rebound.cli.common import Parser, cache_compilations, config_from_args, configure_process, fail
from l2rebound.config import ConfigError
from l2rebound.registry import PluginWarning, RegistryError
from l2rebound.store import StoreError

__all__ = ["build_parser", "cache_compilations", "config_from_args", "configure_process", "main"]

COMMANDS = (experiment, reproduce, sweep, align, plot, analyze, check)
"""The command modules, in the order ``--help`` lists them."""


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="l2rebound", description="Teacher–student ℓ₂-distance experiments on tanh networks.")
    parser.add_argument("--version", action="version", version=f"l2rebound {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    experiment.add(commands, reserved={command.COMMAND for command in COMMANDS if command is not experiment})
    for command in COMMANDS:
        if command is not experiment:
            command.add(commands)
    return parser



NEGATIVE = re.compile(r"-\d|-\.\d|-inf|-nan", re.IGNORECASE)


def _attach_negative_values(argv: list[str]) -> list[str]:
    """``--option -1,2`` as ``--option=-1,2``: argparse takes a value that starts with '-' and is not a plain
    number for an option, so a negative list would be refused with "expected one argument" instead of the
    option's own message."""
    out = []
    for i, arg in enumerate(argv):
        if arg == "--":  # what follows is positional, as given
            return out + list(argv[i:])
        if out and out[-1].startswith("--") and out[-1] != "--" and "=" not in out[-1] and NEGATIVE.match(arg):
            out[-1] = f"{out[-1]}={arg}"
        else:
            out.append(arg)
    return out


def _quietly_built() -> argparse.ArgumentParser:
    """``build_parser()``, each plugin left out of it (``registry.PluginWarning``) said once, in one line."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", PluginWarning)
        parser = build_parser()
    for message in dict.fromkeys(str(w.message) for w in caught if issubclass(w.category, PluginWarning)):
        print(f"l2rebound: warning: {message}", file=sys.stderr)
    for other in caught:
        if not issubclass(other.category, PluginWarning):
            warnings.warn_explicit(other.message, other.category, other.filename, other.lineno)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        parser = _quietly_built()
        if not argv:  # a bare ``l2rebound``: what it can do
            parser.print_help()
            return 0
        args = parser.parse_args(_attach_negative_values(argv))
        if args.command is None:
            return fail("give a command (l2rebound --help lists them)")
        return args.handler(args)
    except (ConfigError, StoreError, RegistryError) as error:
        return fail(str(error))
    except BrokenPipeError:  # the reader went away (`| head`): nothing more to say to it
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except OSError as error:  # a path or a disk that failed where no finer message applies
        return fail(f"{error.filename or 'a file'}: {error.strerror or error}; the stored result, if any, is "
                    "untouched: fix that and run the command again")
    except KeyboardInterrupt:
        return fail("interrupted; what was finished is kept: the same command goes on from there", code=130)

