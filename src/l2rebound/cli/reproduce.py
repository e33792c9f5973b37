"""``l2rebound reproduce A|B|C``: the set-up of a published figure of ℓ₂-Experiments, stored as an ordinary
result and drawn over the published curve; ``l2rebound reproduce compression``: the compression study behind
the paper, one procedure experiment per rule, drawn side by side."""

from __future__ import annotations

from l2rebound import store
from l2rebound.cli.analyze import analyze_one
from l2rebound.cli.common import (
    config_from_args,
    config_options,
    configure_process,
    fail,
    output_options,
    report,
    stored,
    typed,
)
from l2rebound.config import PRESETS, Config, ConfigError, parse_noise_levels
from l2rebound.rules import rule_names

PUBLISHED = sorted(name.removeprefix("seed-") for name in PRESETS if name.startswith("seed-"))
"""The published figures that ``reproduce`` re-creates: X for each preset ``seed-X``."""


STUDY = "compression"
"""The compression study: preset ``paper-compress`` under each rule of ``--procedures``."""
PROCEDURES = ("drr", "l1", "pmmp")

COMMAND = "reproduce"


def add(commands) -> None:
    kinds = tuple(dict.fromkeys([*(PRESETS[f"seed-{figure}"]["experiment"] for figure in PUBLISHED),
                                 PRESETS["paper-compress"]["experiment"]]))
    reproduce = commands.add_parser(
        COMMAND, help="re-create a published figure of ℓ₂-Experiments and draw ours over it",
        description="Run the set-up of published figure A, B or C (presets seed-A, seed-B, seed-C; options override "
                    "them), store it as an ordinary result, and draw our curve over the published one in its own view "
                    "(normalised ℓ₂² and losses over epochs; ℓ₂² against σ on log–log axes), with the RMS difference "
                    "and both curves' shape statistics. Writes <stem>_published.{svg,png} into the result folder. "
                    "'compression' runs the compression study of the paper as its authors' code does (preset "
                    "paper-compress) once per rule of --procedures, stores each as a procedure result, draws them "
                    "side by side against alpha (<stem>_compression.{svg,png} in --out) and states both claims "
                    "in numbers.",
    )
    reproduce.add_argument("figure", choices=[*PUBLISHED, STUDY], help="the published figure, or the compression "
                           "study")
    config_options(reproduce, kinds, "set-up options (defaults: the figure's preset, README 'Presets')")
    output_options(reproduce)
    reproduce.add_argument("--scan", type=typed(parse_noise_levels), metavar="LIST|START:STOP:COUNT", default=None,
                           help="figure A or B: also run the set-up at each of these perturbation scales p, in float32 "
                                "and float64, and write how the shape depends on p "
                                "(<stem>_scan.{csv,svg,png} in --out)")
    reproduce.add_argument("--theory", action="store_true",
                           help="figure A or B: also draw the linear-response prediction for the same runs (computed "
                                "as by l2rebound analyze, or reused) and say how much of each run's rebound "
                                "it explains")
    reproduce.add_argument("--teachers", type=int, default=1, metavar="K",
                           help="figure C: run the set-up for K teachers (seeds seed, seed + runs + 1, ...) "
                                "and draw the spread of their mean curves [default: 1]")
    reproduce.add_argument("--procedures", default=",".join(PROCEDURES), metavar="RULE,...",
                           help="compression: the training rules to compare, each a procedure experiment "
                                f"[default: {','.join(PROCEDURES)}]")
    reproduce.set_defaults(handler=run)


def run_study(args) -> int:
    """``reproduce compression``: one procedure experiment per rule, drawn and judged together."""
    from l2rebound.kinds.procedure.figures import comparison_figure
    from l2rebound.kinds.procedure.result import claims
    from l2rebound.plots import write_figure

    if args.scan is not None or args.theory or args.teachers != 1:
        return fail("--scan, --theory and --teachers apply to figures A, B and C, not to the compression study")
    procedures = [name.strip() for name in args.procedures.split(",") if name.strip()]
    unknown = [name for name in procedures if name not in rule_names()]
    if not procedures or unknown or len(set(procedures)) != len(procedures):
        return fail(f"--procedures must name distinct training rules among {', '.join(rule_names())} "
                    f"(got {args.procedures!r})")
    if getattr(args, "train", None) is not None:
        return fail("--train is set by the study: name the training rules with --procedures")
    base = config_from_args(args, "procedure", preset="paper-compress")
    try:
        configs = [base.replace(train=name) for name in procedures]
    except ConfigError as error:
        return fail(str(error))
    store.check_writable(args.out, *configs)  # every set-up is valid, and the store takes them all, before any trains
    results = []
    for config in configs:
        folder, result = stored(config, args)
        code = report(folder, result)
        if code:
            return code
        results.append(result)
    stem = args.out / f"{base.figure_stem()}_{STUDY}-{'-'.join(procedures)}"
    for path in write_figure(comparison_figure(results), stem):
        print(f"figure: {path}")
    print("\n".join(claims(results)))
    return 0


def run(args) -> int:
    from l2rebound import reproduce
    from l2rebound.plots import write_figure

    if args.figure == STUDY:
        return run_study(args)
    config = config_from_args(args, Config.experiment, preset=f"seed-{args.figure}")
    if args.procedures != ",".join(PROCEDURES):
        return fail("--procedures applies to the compression study only")
    if args.teachers < 1 or args.teachers > 1 and args.figure != "C":
        return fail("--teachers must be 1 or more, and more than 1 only for figure C (a noise experiment's "
                     f"single teacher; figures A and B draw a teacher per run) (got {args.teachers})")
    if args.theory and args.figure == "C":
        return fail("--theory draws the linear response over figures A and B; for figure C, run l2rebound analyze "
                     "on the result folder")
    if args.scan is not None and args.figure == "C":
        return fail("--scan varies the initial perturbation of figures A and B; figure C starts at its teacher")
    if args.scan is not None and (not args.scan or min(args.scan) <= 0):
        return fail(f"--scan needs perturbation scales > 0 (got {','.join(map(str, args.scan)) or 'none'})")
    if args.figure != "C" and config.epochs < 2:
        return fail(f"figure {args.figure} normalises each run over its epochs: --epochs must be 2 or more")
    if args.theory:
        configure_process()  # the analysis computes in JAX even where the result is reused
    others = [config.replace(seed=config.seed + k * (config.runs + 1)) for k in range(1, args.teachers)]
    scan = [config.replace(initial_permut=p, dtype=d) for d in ("float32", "float64") for p in args.scan or ()]
    for extra in others + scan:  # every set-up is valid before the first trains
        store.check_writable(args.out, extra)
    folder, result = stored(config, args)
    extra = [stored(other, args)[1] for other in others]
    with store.lock(args.out, config):  # no --force elsewhere replaces the folder while its figures are written
        code = report(folder, result)
        if code:
            return code
        analysis = None
        if args.theory:
            code = analyze_one(folder, result, False, args.no_progress)
            if code:
                return code
            analysis = store.load_analysis(folder)
        comparison = reproduce.compare(args.figure, result, analysis)
        for path in write_figure(reproduce.comparison_figure(comparison, result, extra),
                                 folder / f"{config.figure_stem()}_published"):
            print(f"figure: {path}")
    print(comparison.summary())
    if scan:
        rows = reproduce.scan_rows([stored(one, args)[1] for one in scan], args.figure)
        if not rows:
            return fail("every run of every scanned set-up diverged: nothing to compare", code=1)
        stem = args.out / f"{config.figure_stem()}_scan"
        table = store.write_atomic(stem.with_name(stem.name + ".csv"), lambda tmp: reproduce.write_scan(rows, tmp))
        for path in [table, *write_figure(reproduce.scan_figure(rows, args.figure), stem)]:
            print(f"scan: {path}")
        print(reproduce.scan_table(rows))
    return 0
