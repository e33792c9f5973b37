"""The noise experiment (experiment C of ℓ₂-Experiments): ℓ₂ after training against the label noise σ, with
common random numbers across levels and a fitted power law."""

from l2rebound.registry import KindSpec

SPEC = KindSpec(
    name="noise",
    help="ℓ₂ after training vs label noise σ, with a fitted power law (experiment C of ℓ₂-Experiments)",
    description=(
        "One teacher; for each run the same inputs and unit noise z at every level σ (common random numbers). "
        "Each student starts at the teacher and trains on f(x) + σz; the distances after the last epoch are "
        "fitted by ℓ₂ ≈ c·σ^k."),
    result="l2rebound.kinds.noise.result:NoiseResult",
    engine="l2rebound.kinds.noise.engine:run",
    figures="l2rebound.kinds.noise.figures:figures",
    views=("l2",),
    fields=("noise_levels",),
    example={"teacher_dims": (2, 4, 1), "dataset_size": 64, "test_set_size": 16, "epochs": 5, "runs": 2,
             "noise_levels": (1e-3, 1e-2, 1e-1)},
    theory=True,
)
