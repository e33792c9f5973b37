"""What the commands share: the one-line argparse, the options generated from ``Config`` fields, the output
options, turning parsed options into a config, the store's result for a config, the report of a result, and
the configuration of the CLI's own process (``configure_process``)."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import sys
import threading
from pathlib import Path

import numpy as np

from l2rebound import registry, store
from l2rebound.config import Config, ConfigError, build, choices_of, flag, parse_dims, parse_noise_levels

EXIT_USAGE = 2


class Parser(argparse.ArgumentParser):
    """argparse that reports a usage error in one line (no usage dump) with exit code 2."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def config_options(parser: argparse.ArgumentParser, kinds: tuple[str, ...] | None,
                   title: str = "experiment options (defaults: the table of the ℓ₂-Experiments README)") -> None:
    """One option per config field that one of the experiment ``kinds`` uses (None: every field); a field that
    a kind requires to be at least 1 says so."""
    defaults = Config()
    specs = [registry.kind(name) for name in kinds or registry.kind_names()]
    used = {name for spec in specs for name in spec.fields}
    group = parser.add_argument_group(title)
    for f in dataclasses.fields(Config):
        meta = f.metadata
        if (meta.get("cli") is False or meta.get("per_kind") and f.name not in used
                or all(f.name in spec.ignored for spec in specs)):
            continue  # not an option, or one that these experiments do not use
        default = getattr(defaults, f.name)
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        if f.name == "student_dims":
            shown = "the teacher's"
        needing = [s.name for s in specs if f.name in s.required]
        text = meta["help"] + (f" (the {' and '.join(needing)} experiment{'s need' if len(needing) > 1 else ' needs'} "
                               ">= 1)" if needing else "")
        group.add_argument(
            flag(f.name), dest=f.name, default=argparse.SUPPRESS, choices=choices_of(f),
            type=typed(meta["parse"]) if meta["parse"] else str, metavar=METAVARS.get(meta["parse"]),
            help=(text if "[default:" in text else f"{text} [default: {shown}]").replace("%", "%%"),  # %-formatted
        )


METAVARS = {parse_dims: "D0,D1,...", parse_noise_levels: "LIST|START:STOP:COUNT", float: "X", int: "N"}


def typed(parse):
    """Turn a config parser's ConfigError into argparse's own one-line message."""

    def convert(text: str):
        try:
            return parse(text)
        except ConfigError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    convert.__name__ = parse.__name__  # argparse names the type in its "invalid ... value" message
    return convert


def output_options(parser: argparse.ArgumentParser) -> None:
    """--out, --force and --no-progress of a command that trains."""
    parser.add_argument("--out", type=Path, default=Path("results"), metavar="DIR",
                        help="store root; the result goes to DIR/<experiment>-<hash>/ [default: results]")
    parser.add_argument("--force", action="store_true", help="retrain even if this config's result is stored")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def config_from_args(args: argparse.Namespace, experiment: str, preset: str | None = None) -> Config:
    """Defaults, then the preset (``preset``, else the ``--preset`` given), then the options given explicitly."""
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(Config) if hasattr(args, f.name)}
    preset = preset or getattr(args, "preset", None)
    return build(preset=preset, **given) if preset else Config(experiment=experiment, **given)


def fail(message: str, code: int = EXIT_USAGE):
    print(f"l2rebound: error: {message}", file=sys.stderr)
    return code


def warn(message: str) -> None:
    print(message, file=sys.stderr)


def _prepare_figures() -> None:
    with contextlib.suppress(Exception):  # only a head start: the figures themselves report any error
        from l2rebound.plots import warm_up

        warm_up()


def report(folder: Path, result, squared: bool = False) -> int:
    """Warnings, figures written into ``folder`` and the summary of a result; exit code 1 when every run
    diverged."""
    from l2rebound.plots import write_figures

    for line in result.warnings():
        warn(line)
    if np.all(result.diverged_at >= 0):
        return fail(f"every run diverged; the metrics are stored in {folder}", code=1)
    for path in write_figures(result, folder, squared):
        print(f"figure: {path}")
    print(result.summary(squared))
    return 0


def stored(config: Config, args) -> tuple[Path, object]:
    """``config``'s result from the store under ``--out``, computed there first if needed."""
    from l2rebound.api import execute

    if args.force or not store.is_finished(store.result_dir(args.out, config)):
        configure_process()  # only to train: reusing a stored result needs no JAX
        # the figures' imports and first-use costs, while the engine trains without holding the GIL; joined
        # before anything else draws, since matplotlib's fonts are not safe to use from two threads at once
        ahead = threading.Thread(target=_prepare_figures, name="l2rebound-figures", daemon=True)
        ahead.start()
        try:
            return execute(config, args.out, args.force, not args.no_progress, say=print)
        finally:
            ahead.join()
    return execute(config, args.out, args.force, not args.no_progress, say=print)


@contextlib.contextmanager
def held(folder: Path):
    """The result stored in ``folder``, read and used under its lock, so that no ``--force`` elsewhere
    replaces the folder while this command writes into it."""
    from l2rebound.api import load

    store.require_finished(folder)

    def waiting() -> None:
        print(store.waiting_line(root, config), flush=True)

    root, config = Path(os.path.abspath(folder)).parent, store.load_config(folder)
    with store.lock(root, config, on_wait=waiting):
        yield load(folder)


def cache_compilations(directory: Path | None = None) -> None:
    """Keep XLA's compiled programs on disk (by default in ``xla`` under the package's cache folder,
    ``kernel.cache_root``), so a second command with the same shapes skips compiling them."""
    import jax

    from l2rebound import kernel

    jax.config.update("jax_compilation_cache_dir", str(directory or kernel.cache_root() / "xla"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)


def configure_process() -> None:
    """What the CLI sets in its own process before it trains (a library never does): compiled programs cached
    on disk, one CPU device per core (each trains its share of the runs), and the fused kernel's Threefry
    as the CPU lowering of ``jax.random``'s hash (compiles the set-up program in a fraction of the time)."""
    import jax

    from l2rebound import kernel

    cache_compilations()
    if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
        try:
            jax.config.update("jax_num_cpu_devices", len(os.sched_getaffinity(0)))
        except RuntimeError:  # the CPU backend is already up (an in-process caller): keep its device count
            pass
    kernel.use_threefry_lowering()
