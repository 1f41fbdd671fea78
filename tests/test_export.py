"""ONNX export: same outputs as PyTorch at any size; the int8 model stays close to it."""

import numpy as np
import pytest
import torch
from conftest import small_run

from pixelwise.cli.main import main
from pixelwise.data.pairs import IMAGE_DIR, MASK_DIR
from pixelwise.inference.predictor import Predictor

ort = pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def exported(scenes, tmp_path_factory):
    run = small_run(scenes, tmp_path_factory.mktemp("export") / "run", epochs=2)
    assert main(["export", str(run), "--int8", str(scenes / IMAGE_DIR), "--calibration-count", "8"]) == 0
    return run


@pytest.mark.parametrize("shape", [(1, 3, 48, 64), (2, 3, 80, 112), (1, 3, 96, 128)])
def test_onnx_matches_pytorch_at_any_size(exported, shape):
    model = Predictor(exported, precision="fp32").model.cpu()
    x = torch.rand(*shape)
    with torch.no_grad():
        expected = model(x).numpy()
    session = ort.InferenceSession(str(exported / "model.onnx"), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"image": x.numpy()})
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-4)


def test_int8_model_is_close_to_fp32(exported, scenes):
    from pixelwise.data.decode import read_image
    from pixelwise.data.resize import resize_image
    from pixelwise.data.transforms import to_input

    image = resize_image(read_image(sorted((scenes / IMAGE_DIR).iterdir())[3]), (48, 64))
    x = to_input(image[None]).contiguous().numpy()
    fp32 = ort.InferenceSession(str(exported / "model.onnx"), providers=["CPUExecutionProvider"])
    int8 = ort.InferenceSession(str(exported / "model.int8.onnx"), providers=["CPUExecutionProvider"])
    a, b = fp32.run(None, {"image": x})[0], int8.run(None, {"image": x})[0]
    assert (exported / "model.int8.onnx").stat().st_size < 0.4 * (exported / "model.onnx").stat().st_size
    assert np.abs(a - b).mean() < 0.1 * np.abs(a).mean() + 1e-3
    assert (a.argmax(1) == b.argmax(1)).mean() > 0.8


def test_export_of_a_missing_run_is_a_clear_error(tmp_path, capsys):
    assert main(["export", str(tmp_path)]) == 1
    assert "not a pixelwise run directory" in capsys.readouterr().err


def test_predict_with_the_onnx_engine(exported, scenes, tmp_path, capsys):
    import shutil

    from PIL import Image

    image = sorted((scenes / IMAGE_DIR).iterdir())[0]
    assert main(["predict", str(exported), str(image), "--out", str(tmp_path / "onnx"), "--engine", "onnx",
                 "--no-progress"]) == 0
    mask = np.asarray(Image.open(tmp_path / "onnx" / f"{image.stem}_mask.png"))
    assert mask.shape == (96, 128)
    # without the int8 file, the fp32 ONNX model gives the same masks as PyTorch (up to rare ties)
    fp32_only = tmp_path / "fp32run"
    shutil.copytree(exported, fp32_only)
    (fp32_only / "model.int8.onnx").unlink()
    from pixelwise.data.decode import read_image

    picture = read_image(image)
    onnx_mask = Predictor(fp32_only, engine="onnx").predict(picture)
    torch_mask = Predictor(fp32_only, precision="fp32").predict(picture)
    assert (onnx_mask == torch_mask).mean() > 0.999


def test_onnx_engine_prefers_the_int8_model(exported, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(exported, run)
    (run / "model.int8.onnx").write_bytes(b"not a model")
    with pytest.raises(ValueError, match=r"model\.int8\.onnx: unreadable ONNX model"):
        Predictor(run, engine="onnx")


def test_int8_graph_has_no_float_transposed_convs(exported):
    """ONNX Runtime runs ConvTranspose in fp32 only; export writes the sub-pixel form instead."""
    onnx = pytest.importorskip("onnx")
    ops = {node.op_type for node in onnx.load(str(exported / "model.onnx")).graph.node}
    assert "ConvTranspose" not in ops and "DepthToSpace" in ops


def test_evaluate_with_the_onnx_engine_scores_like_pytorch(exported, scenes, tmp_path):
    from pixelwise.evaluation.evaluate import evaluate

    kw = dict(cache_dir=tmp_path / "cache", progress=False)
    torch_scores = evaluate(exported, scenes / IMAGE_DIR, scenes / MASK_DIR, **kw).scores
    onnx_scores = evaluate(exported, scenes / IMAGE_DIR, scenes / MASK_DIR, engine="onnx", **kw).scores
    assert abs(torch_scores.pixel_accuracy - onnx_scores.pixel_accuracy) < 0.05


def test_onnx_engine_runs_a_batch_in_chunks_side_by_side_with_the_same_outputs(exported, monkeypatch):
    from pixelwise.inference.onnx_engine import onnx_forward

    calls = []
    real_run = ort.InferenceSession.run

    def recording_run(session, outputs, feed, *args):
        calls.append(len(feed["image"]))
        return real_run(session, outputs, feed, *args)

    monkeypatch.setattr(ort.InferenceSession, "run", recording_run)
    x = torch.rand(11, 3, 48, 64)
    expected = onnx_forward(exported, cores=1)(x)  # one session, the whole batch in one call
    assert expected.shape == (11, 23, 48, 64) and calls == [11]
    chunked = onnx_forward(exported, cores=3)
    calls.clear()
    np.testing.assert_allclose(chunked(x).numpy(), expected.numpy(), rtol=1e-4, atol=1e-4)  # in order
    assert sorted(calls) == [3, 4, 4]  # chunks of at most 4, three at a time
    calls.clear()
    np.testing.assert_allclose(chunked(x[:2]).numpy(), expected[:2].numpy(), rtol=1e-4, atol=1e-4)
    assert calls == [2]  # fewer images than cores: one call on all of them
