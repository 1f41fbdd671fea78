"""Shared fixtures: small synthetic CARLA-layout datasets made on the fly (never the real frames)."""

from pathlib import Path

import pytest

from pixelwise.config import DataConfig, RunConfig, TrainConfig
from pixelwise.model.unet import preset
from pixelwise.synth import write_dataset


@pytest.fixture(scope="session", autouse=True)
def private_folders(tmp_path_factory):
    """The tests' own cache folder (decoded data, remembered precisions), not the user's ~/.cache, and their
    subprocesses' own temporary folder: torchrun leaves a ``torchelastic_*`` log folder in it each launch."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PIXELWISE_CACHE", str(tmp_path_factory.mktemp("pixelwise-cache")))
        patch.setenv("TMPDIR", str(tmp_path_factory.mktemp("subprocess-tmp")))
        yield


@pytest.fixture(scope="session")
def scenes(tmp_path_factory) -> Path:
    """32 small street scenes in the CameraRGB/CameraMask layout, shared read-only by the tests."""
    return write_dataset(tmp_path_factory.mktemp("scenes"), 32, seed=7, height=96, width=128, progress=False)


def small_config(epochs: int = 2, **train) -> RunConfig:
    """A narrow U-Net at 48x64 so a training run takes seconds."""
    return RunConfig(model=preset("assignment", n_filters=16), data=DataConfig(size=(48, 64), val_fraction=0.25),
                     train=TrainConfig(epochs=epochs, batch_size=4, **train))


def small_run(scenes: Path, run_dir: Path, epochs: int) -> Path:
    """A run of ``small_config`` trained on ``scenes`` into ``run_dir``, quietly (cache beside it)."""
    from pixelwise.data.pairs import IMAGE_DIR, MASK_DIR
    from pixelwise.training.loop import train

    train(scenes / IMAGE_DIR, scenes / MASK_DIR, run_dir, small_config(epochs=epochs),
          cache_dir=run_dir.parent / "cache", progress=False, log=lambda _: None)
    return run_dir

