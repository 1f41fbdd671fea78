"""Prediction returns masks at each image's own size, whatever that size is."""

import numpy as np
import pytest
import torch
from conftest import small_run
from PIL import Image

from pixelwise.data.pairs import IMAGE_DIR, MASK_DIR
from pixelwise.device import native_bf16
from pixelwise.inference.predict import predict
from pixelwise.inference.predictor import Predictor


@pytest.fixture(scope="module")
def run(scenes, tmp_path_factory):
    return small_run(scenes, tmp_path_factory.mktemp("predict") / "run", epochs=1)


@pytest.mark.parametrize("h,w", [(96, 128), (100, 130), (37, 53), (480, 640)])
def test_mask_at_original_size(run, h, w):
    image = np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8)
    predictor = Predictor(run)
    mask = predictor.predict(image)
    assert mask.shape == (h, w) and mask.dtype == np.uint8 and mask.max() < 23


@pytest.mark.parametrize("size", ["native", (40, 56)])
def test_any_model_size_is_padded_and_cropped(run, size):
    image = np.random.default_rng(1).integers(0, 255, (70, 90, 3), dtype=np.uint8)
    predictor = Predictor(run)
    assert predictor.logits(image, size).shape[1:] == ((70, 90) if size == "native" else size)
    assert predictor.predict(image, size).shape == (70, 90)


def test_predict_files_writes_all_outputs_and_reports_bad_files(run, scenes, tmp_path):
    images = sorted((scenes / IMAGE_DIR).iterdir())[:2]
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png")
    result = predict(Predictor(run), [*images, bad, tmp_path / "missing.png"], tmp_path / "out",
                           masks_dir=scenes / MASK_DIR)
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    stem = images[0].stem
    assert {f"{stem}_mask.png", f"{stem}_color.png", f"{stem}_overlay.png", f"{stem}_figure.png"} <= set(names)
    assert len(result.written) == 8
    assert [p.path.name for p in result.problems] == ["missing.png", "broken.png"]
    mask = np.asarray(Image.open(tmp_path / "out" / f"{stem}_mask.png"))
    assert mask.shape == (96, 128) and mask.max() < 23
    from pixelwise.data.decode import read_image

    assert np.array_equal(mask, Predictor(run).predict(read_image(images[0])))  # the file holds the prediction


def test_same_name_in_two_folders_is_reported_not_overwritten(run, scenes, tmp_path):
    import shutil

    image = sorted((scenes / IMAGE_DIR).iterdir())[0]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    shutil.copy(image, tmp_path / "a" / "x.png")
    shutil.copy(image, tmp_path / "b" / "x.png")
    result = predict(Predictor(run), [tmp_path / "a" / "x.png", tmp_path / "b" / "x.png"], tmp_path / "out")
    assert len(result.written) == 3
    assert len(result.problems) == 1 and "same name" in result.problems[0].message


def test_missing_masks_folder_is_named(run, scenes, tmp_path):
    from pixelwise.data.problems import DataError

    with pytest.raises(DataError, match="masks folder not found"):
        predict(Predictor(run), [scenes / IMAGE_DIR], tmp_path / "out", masks_dir=tmp_path / "nomasks")


@pytest.mark.skipif(not native_bf16(torch.device("cpu")), reason="auto is measured on CPUs with native bf16 only")
def test_auto_precision_on_a_bf16_cpu_is_measured_on_the_first_load_and_remembered(run, tmp_path, monkeypatch):
    import json

    monkeypatch.setenv("PIXELWISE_CACHE", str(tmp_path / "cache"))
    store = tmp_path / "cache" / "precision.json"
    first = Predictor(run, device=torch.device("cpu"))
    (entry,) = json.loads(store.read_text()).values()
    assert entry["choice"] == ("fp32" if first.dtype is None else "bfloat16")
    # one image of the run's training size, timed as training is
    assert entry["measured"]["input"] == [48, 64] and set(entry["seconds"]) == {"fp32", "bfloat16"}
    kept = store.read_text()
    again = Predictor(run, device=torch.device("cpu"))
    assert store.read_text() == kept and again.dtype == first.dtype  # remembered, not measured (and timed) again
    assert Predictor(run, device=torch.device("cpu"), precision="fp32").dtype is None  # a named precision is kept
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")  # kernels limited below bf16: no native bf16 however the chip
    store.unlink()
    assert Predictor(run, device=torch.device("cpu")).dtype is None  # no native bf16: fp32, nothing measured
    assert not store.exists()


def test_precision_flag_reaches_the_torch_engine_and_is_refused_for_onnx(run, scenes, tmp_path, capsys):
    from pixelwise.cli.main import main
    from pixelwise.data.decode import read_image

    image = sorted((scenes / IMAGE_DIR).iterdir())[0]
    pixels = read_image(image)
    fp32, bf16 = (Predictor(run, precision=p).logits(pixels) for p in ("fp32", "bf16"))
    assert not torch.equal(fp32, bf16)  # the two really compute differently
    for precision in ("fp32", "bf16"):
        assert main(["predict", str(run), str(image), "--out", str(tmp_path / precision), "--precision", precision,
                     "--no-progress"]) == 0
        written = np.asarray(Image.open(tmp_path / precision / f"{image.stem}_mask.png"))
        assert np.array_equal(written, Predictor(run, precision=precision).predict(pixels))
    capsys.readouterr()
    assert main(["predict", str(run), str(image), "--out", str(tmp_path / "onnx"), "--engine", "onnx",
                 "--precision", "fp32"]) == 1
    assert "--precision is the torch engine's" in capsys.readouterr().err
