"""``l2rebound <kind>``: one command per registered experiment kind, which runs it (or reuses the stored result)
and writes its figures and summary."""

from __future__ import annotations

import warnings

from l2rebound import registry, store
from l2rebound.cli.common import config_from_args, config_options, output_options, report, stored, warn
from l2rebound.config import PRESETS


def add(commands, reserved=()) -> None:
    """A command for every registered kind, with its presets and the options of the fields it uses; a kind
    named like one of the ``reserved`` commands is left out with a warning."""
    for spec in registry.kinds().values():
        if spec.name in reserved:
            warnings.warn(f"the experiment kind {spec.name!r} has the name of a command: it has no command of its own",
                          registry.PluginWarning, stacklevel=2)
            continue
        command = commands.add_parser(spec.name, help=spec.help, description=spec.description)
        named = sorted(name for name, fields in PRESETS.items() if fields.get("experiment") == spec.name)
        if named:
            command.add_argument("--preset", choices=named, default=None,
                                 help="a named set-up (README, 'Presets'); explicit options override it")
        config_options(command, (spec.name,))
        output_options(command)
        command.add_argument("--squared", action="store_true",
                             help="plot ℓ₂² (the quantity of the ℓ₂-Experiments figures) instead of ℓ₂ (the noise "
                                  "experiment's power law is then fitted to ℓ₂²)")
        command.set_defaults(handler=run)


def run(args) -> int:
    config = config_from_args(args, args.command)
    try:
        folder, result = stored(config, args)
    except KeyboardInterrupt:
        from l2rebound.experiments import kept_work

        checkpoint = store.Checkpoint(args.out, config)
        kept = kept_work(checkpoint)
        if not args.force and store.is_finished(store.result_dir(args.out, config)):  # stored, by this or another
            warn(f"interrupted; the result is stored in {store.result_dir(args.out, config)}: the same command "
                 "shows it")
        else:
            warn(f"interrupted: kept in {checkpoint.folder}: {kept}; the same command resumes from there" if kept
                 else "interrupted before any block of epochs finished: nothing was kept; the same command starts "
                      "over")
        return 130
    with store.lock(args.out, config):  # no --force elsewhere replaces the folder while its figures are written
        return report(folder, result, args.squared)
