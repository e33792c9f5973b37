"""Where a sweep's cells train: in this process, or on the workers of a Dask cluster.

The unit of work is a piece: cells that share a ``config.pack_key`` (they differ only in traced fields), which
``compute_cells`` trains as one batch of one compiled program where the kind is ``packable`` (else one after
the other) and stores
as ordinary results. A piece holds
its cells' locks while it works and skips the cells stored already, so that a piece retried after a worker
died, or run twice by two sweeps, costs nothing more and changes no number.

Dask workers: each is one process with one thread (XLA uses the process's cores itself), and on a GPU
machine ``XLA_PYTHON_CLIENT_PREALLOCATE=false`` keeps a worker from taking 75 % of the card's memory at
start, so that one process per GPU can share it with the scheduler's. The workers need the store's
filesystem at the same path.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

from l2rebound import registry, store
from l2rebound.config import Config, ConfigError, pack_key
from l2rebound.results import kind_of

ENGINES = ("local", "dask")
WORKER_ENV = {"XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
"""Environment of the workers of a ``LocalCluster`` (module docstring)."""


def run_epochs(config: Config) -> int:
    """Run-epochs of the experiment of ``config``: what its progress counts."""
    return kind_of(config).run_epochs(config)


def pieces(configs: list[Config], parts: int = 1,
           max_runs: Callable[[Config], int] | None = None) -> list[list[Config]]:
    """``configs`` grouped by ``pack_key`` (in first-seen order), each group cut into at most ``parts``
    pieces of consecutive cells with about equal numbers of run-epochs, so that ``parts`` workers share it,
    and further so that no piece holds more than ``max_runs(config)`` runs of its group (what one process
    can hold of such configs; the configs of a group share their shapes)."""
    groups: dict[str, list[Config]] = {}
    for config in configs:
        groups.setdefault(pack_key(config), []).append(config)
    out = []
    for group in groups.values():
        limit = max_runs(group[0]) if max_runs else None
        share = sum(map(run_epochs, group)) / parts
        piece, done, cut = [], 0, 1
        for config in group:
            if piece and limit and sum(c.runs for c in piece) + config.runs > limit:
                out.append(piece)
                piece = []
            piece.append(config)
            done += run_epochs(config)
            if done >= share * cut:
                out.append(piece)
                piece, cut = [], cut + 1
        if piece:
            out.append(piece)
    return out


def compute_cells(configs: list[Config], out: str | Path, force: bool = False,
                  on_progress: Callable[[int], None] | None = None,
                  say: Callable[[str], None] = lambda line: None) -> None:
    """Train the cells of one piece (one ``pack_key``) that ``out`` does not hold yet (all with ``force``)
    with one compiled program (cells of a kind that is not ``packable`` one after the other) and store each as an
    ordinary result. Holds every cell's lock throughout (``say``
    hears when it waits for one); each cell resumes from its own kept chunks, the ones ``l2rebound epoch``
    keeps too. ``on_progress(n)``: run-epochs done, stored cells included."""
    from l2rebound.experiments import run_experiment  # the engine, in the process that trains

    out = Path(out)
    with ExitStack() as held:
        for config in sorted(configs, key=Config.config_hash):  # one order for every process: no deadlock
            held.enter_context(store.lock(out, config, on_wait=lambda c=config: say(store.waiting_line(out, c))))
        todo = [c for c in configs if force or not store.is_finished(store.result_dir(out, c))]
        if on_progress:
            on_progress(sum(run_epochs(c) for c in configs if c not in todo))
        if todo:
            checkpoints = [store.Checkpoint(out, c) for c in todo]
            for checkpoint in checkpoints if force else ():
                checkpoint.clear()
            packed = registry.kind(todo[0].experiment).packable
            if packed:
                results = registry.resolve(packed)(todo, on_progress, checkpoints)
            else:  # computed lazily: each is stored before the next trains
                results = (run_experiment(c, on_progress, k) for c, k in zip(todo, checkpoints))
            for result, checkpoint in zip(results, checkpoints):
                store.save(out, result)
                checkpoint.clear()


def run_pieces(todo: list[list[Config]], out: Path, force: bool, engine: str = "local", workers: int | None = None,
               scheduler: str | None = None, on_progress: Callable[[int], None] | None = None,
               say: Callable[[str], None] = lambda line: None) -> None:
    """Compute every piece of ``todo``: here, one after the other (``engine`` "local"), or on Dask workers
    ("dask"): a ``LocalCluster`` of ``workers`` processes, or the cluster at ``scheduler``
    (``tcp://HOST:PORT``)."""
    if engine == "local":
        for piece in todo:
            compute_cells(piece, out, force, on_progress, say)
        return
    try:
        from dask.distributed import Client, LocalCluster, as_completed
    except ImportError:
        raise ConfigError("--engine dask needs Dask: pip install 'l2rebound[dask]'") from None
    with ExitStack() as stack:
        if scheduler:
            say(f"connecting to the Dask scheduler at {scheduler}")
            try:
                client = stack.enter_context(Client(scheduler, timeout="20s"))
            except (OSError, ValueError) as error:  # unreachable, or not an address
                raise ConfigError(f"--scheduler {scheduler}: cannot connect ({error})") from None
        else:
            workers = workers or 2
            say(f"starting a local Dask cluster of {workers} worker processes")
            cluster = stack.enter_context(LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                                       dashboard_address=None, env=WORKER_ENV))
            client = stack.enter_context(Client(cluster))
        futures = {client.submit(compute_cells, piece, str(out.absolute()), force, pure=False): piece for piece in todo}
        for future in as_completed(futures):
            future.result()  # a piece's own error ends the sweep here, with what it said
            if on_progress:
                on_progress(sum(map(run_epochs, futures[future])))
