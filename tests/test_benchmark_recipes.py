"""The benchmarks' pinned training recipes stay valid configs as the app's defaults move.

A pinned recipe spells out every setting that shapes its checkpoint; a setting added later defaults to today's
value, which can contradict the pinned ones (Min-SNR weighting with the pinned γ = 0) or change what is trained
(a ten-minute time limit on a step-counted run). Checked here without training anything.
"""

from benchmarks import quality_vs_steps


def test_quality_vs_steps_recipe_is_a_valid_config_that_trains_its_pinned_steps():
    cfg = quality_vs_steps.run_config(quality_vs_steps.parse_args([]))  # what train() trains; raises if invalid
    assert cfg.optim.total_steps == quality_vs_steps.FULL["train_steps"]
    assert cfg.optim.train_minutes == 0  # the step count ends the run, not a clock
    assert cfg.diffusion.loss_weighting == "uniform" and cfg.diffusion.prediction == "epsilon"
    assert cfg.model.preset == "tiny" and cfg.optim.ema == "fixed"
