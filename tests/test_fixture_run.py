"""A run directory written by pixelwise 0.1.0 (commit 5db559e, before the package layout) still loads,
predicts the same mask, and the same settings still train the same weights.

The fixture is tiny (a 3-level U-Net of 2 base filters trained 2 epochs at 32x48 with the seed recipe
on 12 synthetic scenes of seed 11) and was made by that release; see tests/fixtures/README.md.
"""

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file

import pixelwise as pw
from pixelwise.data.pairs import IMAGE_DIR, MASK_DIR
from pixelwise.rundir import load_config
from pixelwise.synth import write_dataset

FIXTURES = Path(__file__).parent / "fixtures"
RUN = FIXTURES / "run-0.1.0"


def test_an_old_run_predicts_the_mask_it_predicted_then():
    image = np.asarray(Image.open(FIXTURES / "scene.png"))
    expected = np.asarray(Image.open(FIXTURES / "scene_mask-0.1.0.png"))
    # That release predicted in bf16 (its `auto` on the CPU that made the mask); in fp32 this 2-epoch
    # network changes 88 of the 6,144 pixels, so the precision is named rather than measured here.
    assert (pw.Predictor(RUN, precision="bf16").predict(image) == expected).all()
    last = pw.Predictor(RUN, weights="last", precision="bf16")
    assert (last.predict(image) == expected).all()  # best was the last epoch


def test_the_same_settings_train_the_same_weights(tmp_path):
    """Same data, same config.json: the weights, Adam moments and RNG state after 2 epochs match
    the old release's. Bit for bit on the CPU that made the fixture (checked with torch 2.13 on an
    Intel Xeon with AMX); the tolerance leaves room for another CPU's rounding, not for a change in
    initialisation, batch order or arithmetic, which move weights by far more."""
    data = write_dataset(tmp_path / "data", 12, seed=11, height=96, width=128, progress=False)
    run = tmp_path / "run"
    # bf16 by name: what that release's `auto` ran on that CPU; today's `auto` may measure fp32 faster.
    config = load_config(RUN).with_train(precision="bf16")
    pw.train(data / IMAGE_DIR, data / MASK_DIR, run, config, cache_dir=tmp_path / "cache", progress=False,
             log=lambda _: None)
    assert load_config(run) == config
    old, new = load_file(RUN / "last.safetensors"), load_file(run / "last.safetensors")
    assert old.keys() == new.keys()
    for key in old:
        if old[key].is_floating_point():
            torch.testing.assert_close(new[key], old[key], rtol=1e-4, atol=1e-6, msg=key)
        else:
            assert torch.equal(new[key], old[key]), key
