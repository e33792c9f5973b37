"""The compression experiment: prune a wide student after training and ask whether it recovers its narrow
teacher, up to the network's symmetries, and what pruning costs against a vanilla student."""

from l2rebound.registry import KindSpec

SPEC = KindSpec(
    name="compress",
    help="prune a wide student after training: does it recover its teacher (the compression experiment)?",
    description=(
        "Train R students wider than their teachers, prune every parameter with |θ| below --prune-threshold, "
        "fine-tune with the pruned entries held at 0 (--finetune-epochs), and compare them, aligned, with the "
        "teacher and with a vanilla student trained as long from the same start: surviving units, whether the "
        "teacher's sparsity pattern is recovered, distances and test losses."),
    result="l2rebound.kinds.compress.result:CompressionResult",
    engine="l2rebound.kinds.compress.engine:run",
    figures="l2rebound.kinds.compress.figures:figures",
    views=("networks", "comparison", "absolute", "normalised"),
    fields=("noise_sigma", "align_every", "prune_threshold", "finetune_epochs", "prune_method", "tamade_tolerance",
            "tamade_resolution", "finetune_train"),
    required=("align_every",),
    example={"teacher_dims": (2, 3, 1), "student_dims": (2, 4, 1), "dataset_size": 64, "test_set_size": 16,
             "epochs": 5, "runs": 2, "initial_permut": 1e-2, "finetune_epochs": 2},
    sweepable=True,
    curves=True,
    theory=True,
)
