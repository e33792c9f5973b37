"""The epoch experiment (experiments A and B of ℓ₂-Experiments): R students, each trained on its own teacher
and data, every epoch recorded."""

from l2rebound.registry import KindSpec

SPEC = KindSpec(
    name="epoch",
    help="ℓ₂ distance and losses vs epoch (experiments A and B of ℓ₂-Experiments)",
    description=(
        "Train R students on data from their teachers and record, for every epoch, the ℓ₂ distance to the "
        "teacher and the train, test and clean test losses."),
    result="l2rebound.kinds.epoch.result:EpochResult",
    engine="l2rebound.kinds.epoch.engine:run",
    figures="l2rebound.kinds.epoch.figures:figures",
    views=("absolute", "normalised"),
    fields=("noise_sigma", "align_every"),
    example={"teacher_dims": (2, 4, 1), "dataset_size": 64, "test_set_size": 16, "epochs": 5, "runs": 2,
             "initial_permut": 1e-2},
    sweepable=True,
    packable="l2rebound.kinds.epoch.engine:run_cells",
    curves=True,
    theory=True,
)
