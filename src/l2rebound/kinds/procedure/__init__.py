"""The compression procedure: a wide student trained with a sparsity rule and validation-based stopping,
pruned by search, fine-tuned, over a grid of regulariser strengths: does compression lower the test loss,
and does the pruned student recover its teacher up to symmetry?"""

from l2rebound.registry import KindSpec

SPEC = KindSpec(
    name="procedure",
    help="train, prune and fine-tune over an alpha grid with validation stopping (the compression procedure)",
    description=(
        "For every alpha of --alphas and --runs repetitions: train a fresh student (Lux's default initialisation) "
        "on noisy teacher data with the rule --train until the validation loss saturates (at least --min-epochs, "
        "at most --epochs, checked every --check-every epochs), keep the state chosen by validation, prune it "
        "(random-gradient pruning, the largest magnitude threshold whose training loss stays within "
        "1 + --tamade-tolerance, random-gradient pruning), and fine-tune it with the pruned entries held at 0 "
        "(--finetune-train, --finetune-min-epochs to --finetune-epochs). Reports both test metrics, the "
        "clean-label loss, the sparsity and the certified aligned distance to the teacher, per alpha. The "
        "teacher is one network drawn from --seed; no genericity projection is applied."),
    result="l2rebound.kinds.procedure.result:ProcedureResult",
    engine="l2rebound.kinds.procedure.engine:run",
    figures="l2rebound.kinds.procedure.figures:figures",
    views=("alpha", "networks"),
    fields=("noise_sigma", "finetune_epochs", "alphas", "validation_set_size", "min_epochs", "finetune_min_epochs",
            "check_every", "smoothing_window", "tamade_tolerance", "tamade_resolution", "finetune_train"),
    required=("validation_set_size", "check_every"),
    ignored=("alpha", "initial_permut", "perturbation", "student_init", "bias_init", "projection", "margin",
             "projection_frequency"),
    # noisy and fast enough that its runs stop at different epochs in both phases
    example={"teacher_dims": (2, 2, 1), "student_dims": (2, 4, 1), "alphas": (0.0, 0.5), "runs": 2,
             "dataset_size": 32, "validation_set_size": 32, "test_set_size": 32, "epochs": 100, "min_epochs": 40,
             "finetune_epochs": 80, "finetune_min_epochs": 33, "train": "drr", "optimizer": "adam",
             "learning_rate": 0.1, "alpha_scale": "per-sample", "layer_factors": "off", "beta": 5.0,
             "noise_sigma": 0.3},
    rule_state=True,
)
