"""Saved runs keep working: a run directory written by pixelwise 0.1.0 (commit 5db559e, before the
package layout) still loads, predicts the same mask, and the same settings still train the same
weights; a run of the ``default`` recipe (EfficientNet-Lite0) saved as it is written today still
loads, predicts the same mask and resumes by the same rule.

The 0.1.0 fixture is tiny (a 3-level U-Net of 2 base filters trained 2 epochs at 32x48 with the seed
recipe on 12 synthetic scenes of seed 11) and was made by that release; the default-recipe fixture
was made by tests/fixtures/make_default_run.py. See tests/fixtures/README.md.
"""

from pathlib import Path

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import pixelwise as pw
from pixelwise.cli.main import main
from pixelwise.config import RunConfig
from pixelwise.data.pairs import IMAGE_DIR, MASK_DIR
from pixelwise.rundir import BEST, LAST, load_config
from pixelwise.synth import write_dataset

from fixtures.make_default_run import save_weights

FIXTURES = Path(__file__).parent / "fixtures"
RUN = FIXTURES / "run-0.1.0"
DEFAULT_RUN = FIXTURES / "run-default"


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


@pytest.fixture
def default_run(tmp_path):
    """The saved default-recipe run with its weights made from its own config (they stay out of the repo)."""
    run = shutil.copytree(DEFAULT_RUN, tmp_path / "run-default")
    save_weights(run)
    return run


def test_a_default_recipe_run_predicts_the_mask_it_predicted_when_saved(default_run):
    image = np.asarray(Image.open(FIXTURES / "scene.png"))
    expected = np.asarray(Image.open(FIXTURES / "scene_mask-default.png"))
    model = pw.load(default_run, precision="fp32")
    assert model.config.model.encoder == "efficientnet-lite0" and model.config == load_config(DEFAULT_RUN)
    predicted = model.predict(image)
    # Bit for bit on the CPU that made the mask; this 1-epoch network leaves some pixels nearly tied
    # (6 of 6,144 within 1e-3 of the runner-up), which another CPU's fp32 rounding may tip either way,
    # while a change in loading, preprocessing or the network moves far more than those.
    top2 = torch.topk(model.logits(image, "native"), 2, dim=0).values
    clear = (top2[0] - top2[1]).numpy() > 1e-3
    assert (predicted == expected)[clear].all() and clear.mean() > 0.99


def test_a_default_recipe_run_resumes_with_its_own_settings_only(default_run, tmp_path, capsys):
    run = default_run
    data = tmp_path / "data"  # --print-config reads no data
    assert main(["train", str(data), "--out", str(run), "--resume", "--epochs", "3", "--print-config"]) == 0
    printed = capsys.readouterr().out
    assert RunConfig.from_dict(json.loads(printed)) == load_config(DEFAULT_RUN).with_train(epochs=3)
    assert main(["train", str(data), "--out", str(run), "--resume", "--lr", "0.1", "--print-config"]) == 1
    assert "--lr cannot change when resuming" in capsys.readouterr().err
    # The fixture keeps best only (last, with the optimiser's state, is three times its size): nothing to continue.
    with pytest.raises(pw.RunDirError, match=f"nothing to resume .no {LAST}."):
        pw.train(data / IMAGE_DIR, data / MASK_DIR, run, resume=True, progress=False, log=lambda _: None)


def test_a_new_training_into_a_folder_holding_a_saved_model_is_refused(default_run, tmp_path):
    """The fixture has best but no last: still a run, which a new training must not write over."""
    run = default_run
    before = (run / BEST).read_bytes()
    with pytest.raises(pw.RunExists):
        pw.train(tmp_path / "data" / IMAGE_DIR, tmp_path / "data" / MASK_DIR, run, progress=False, log=lambda _: None)
    assert (run / BEST).read_bytes() == before
