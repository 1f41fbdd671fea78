"""Training ingredients of the recipes: losses, augmentation, learning-rate schedule, BatchNorm and
the recipes themselves, from the API and the command line."""

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pixelwise.cli.commands import train_config
from pixelwise.cli.parser import build_parser
from pixelwise.config import DataConfig, RunConfig, TrainConfig
from pixelwise.data.transforms import IGNORE_INDEX
from pixelwise.model.keras import format_summary, summary
from pixelwise.model.unet import ModelConfig, UNet
from pixelwise.recipes import RECIPES, recipe
from pixelwise.rundir import load_config, save_config
from pixelwise.training.augment import (
    Augment,
    class_pixels,
    paste_small,
    random_crop,
    random_flip,
    training_transform,
)
from pixelwise.training.losses import (
    Criterion,
    class_weights,
    make_criterion,
    pixel_counts,
    soft_dice_loss,
)
from pixelwise.training.step import learning_rate


def test_class_weights_favour_rare_classes_and_keep_the_average_pixel_at_one():
    counts = np.array([0, 1_000_000, 10_000, 100])
    w = class_weights(counts).numpy()
    assert w[0] == 0  # absent from training: nothing to learn
    assert w[3] > w[2] > w[1] > 0
    assert w[2] / w[1] == pytest.approx(10.0, rel=1e-5)  # 1/sqrt(frequency)
    assert (w * counts).sum() / counts.sum() == pytest.approx(1.0)
    capped = class_weights(np.array([1e9, 1]), max_ratio=50).numpy()
    assert capped[1] / capped[0] == pytest.approx(50.0)


def test_cross_entropy_ignores_unlabelled_pixels_and_weights_classes():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 5, 6, requires_grad=True)
    target = torch.randint(0, 4, (2, 5, 6))
    target[0, 0, :] = IGNORE_INDEX
    loss = Criterion("ce")(logits, target, pixels=60)
    labelled = target != IGNORE_INDEX
    manual = F.cross_entropy(logits.permute(0, 2, 3, 1)[labelled], target[labelled], reduction="sum")
    assert loss.item() == pytest.approx(manual.item() / 60, rel=1e-5)
    loss.backward()
    assert logits.grad[0, :, 0, :].abs().max() == 0  # no gradient where there is no label

    weights = torch.tensor([1.0, 2.0, 0.5, 3.0])
    weighted = Criterion("ce", weights)(logits, target, pixels=60)
    manual = F.cross_entropy(logits.permute(0, 2, 3, 1)[labelled], target[labelled], weight=weights, reduction="none")
    assert weighted.item() == pytest.approx(manual.sum().item() / 60, rel=1e-5)


def test_soft_dice_is_zero_when_right_and_near_one_when_wrong():
    target = torch.zeros(1, 8, 8, dtype=torch.long)
    target[0, :4] = 1
    right = F.one_hot(target, 3).permute(0, 3, 1, 2).float() * 50
    wrong = F.one_hot((target + 1) % 3, 3).permute(0, 3, 1, 2).float() * 50
    assert soft_dice_loss(right, target).item() < 0.05
    assert soft_dice_loss(wrong, target).item() > 0.9
    # A small class counts as much as a large one: missing it costs about half (2 classes present).
    small = torch.zeros(1, 8, 8, dtype=torch.long)
    small[0, 0, 0] = 1
    only_big = F.one_hot(torch.zeros_like(small), 3).permute(0, 3, 1, 2).float() * 50
    assert soft_dice_loss(only_big, small).item() == pytest.approx(0.5, abs=0.05)


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_ce_plus_dice_matches_the_textbook_formula_in_value_and_gradient(memory_format):
    """The loss runs on a [pixels, classes] view with no one-hot; it must equal the one-hot formula."""
    torch.manual_seed(0)
    base = torch.randn(2, 5, 6, 7)
    target = torch.randint(0, 4, (2, 6, 7))  # class 4 absent: no Dice term for it
    target[1, 2] = IGNORE_INDEX
    weights = torch.tensor([1.0, 2.0, 0.5, 3.0, 1.5])

    def textbook(logits):
        labelled = (target != IGNORE_INDEX).unsqueeze(1)
        ce = F.cross_entropy(logits, target, weight=weights, reduction="sum", ignore_index=IGNORE_INDEX) / 84
        probs = torch.softmax(logits, 1) * labelled
        onehot = F.one_hot(target.clamp(min=0), 5).permute(0, 3, 1, 2) * labelled
        overlap, truth, predicted = (probs * onehot).sum((0, 2, 3)), onehot.sum((0, 2, 3)), probs.sum((0, 2, 3))
        present = truth > 0
        return ce + 1 - (2 * overlap[present] / (truth[present] + predicted[present])).mean()

    ours = base.clone().contiguous(memory_format=memory_format).requires_grad_()
    reference = base.clone().requires_grad_()
    loss = Criterion("ce+dice", weights)(ours, target, pixels=84)
    expected = textbook(reference)
    loss.backward()
    expected.backward()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert torch.allclose(ours.grad, reference.grad, atol=1e-6)
    assert ours.grad[1, :, 2].abs().max() == 0


def _coded(n: int, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images whose red channel encodes the class of each pixel, so any mismatch shows."""
    torch.manual_seed(1)
    blocks = torch.randint(0, 10, (n, h // 8, w // 8))  # 8x8 blocks: not symmetric under any flip
    y = blocks.repeat_interleave(8, 1).repeat_interleave(8, 2)
    x = torch.stack([(y.float() + 0.5) / 10, torch.rand(n, h, w), torch.rand(n, h, w)], dim=1)
    return x, y


def test_augmentation_moves_image_and_mask_together():
    x, y = _coded(4, 32, 48)
    torch.manual_seed(3)
    xa, ya = Augment(scale=(0.6, 1.6), color=0.0)(x, y, (32, 32))
    assert xa.shape == (4, 3, 32, 32) and ya.shape == (4, 32, 32)
    labelled = ya != IGNORE_INDEX
    decoded = (xa[:, 0] * 10).floor().long()
    # Bilinear resampling blends neighbours at block edges; elsewhere red still names the class
    # (measured: 0.87; a mask mirrored but not its image agrees on 0.06 of the pixels).
    agreement = (decoded == ya)[labelled].float().mean().item()
    assert agreement > 0.75, agreement
    assert (~labelled).any()  # a zoom-out reaches beyond the image: unlabelled, never a class
    assert xa[:, 0][~labelled].mean() < 0.1  # black there (but for bilinear blending at the image's edge)


def test_augmentation_is_a_function_of_the_seed_and_identity_without_changes():
    x, y = _coded(2, 16, 16)
    torch.manual_seed(5)
    a = Augment()(x, y, (16, 16))
    torch.manual_seed(5)
    b = Augment()(x, y, (16, 16))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    same_x, same_y = Augment(scale=(1.0, 1.0), flip=False, color=0.0)(x, y, (16, 16))
    assert torch.allclose(same_x, x, atol=1e-5) and torch.equal(same_y, y)


def test_learning_rate_warms_up_then_decays_to_zero():
    train = TrainConfig(lr=1.0, schedule="cosine", warmup=0.1)
    lrs = [learning_rate(train, step, 100) for step in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert lrs[10] == pytest.approx(1.0) and lrs[55] == pytest.approx(0.5, abs=0.02)
    assert lrs[99] < 0.001 and all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    assert {learning_rate(TrainConfig(lr=0.3), s, 50) for s in range(50)} == {0.3}


def test_pixel_counts_reads_only_the_given_frames():
    masks = np.zeros((5, 2, 2), dtype=np.uint8)
    masks[3] = 2
    assert pixel_counts(masks, np.array([3, 0]), 3, chunk=1).tolist() == [4, 0, 4]


def test_batch_norm_model_summary_trains_and_keeps_the_assignment_exact():
    model = UNet(ModelConfig(batch_norm=True))
    rows = summary(model, (96, 128, 3))
    assert rows[1:4] == [["Conv2D", (None, 96, 128, 32), 864, "same", "linear", "HeNormal"],
                         ["BatchNormalization", (None, 96, 128, 32), 128], ["Activation", (None, 96, 128, 32), 0, "relu"]]
    assert "Non-trainable params: 5,952" in format_summary(rows, model)  # moving means and variances
    assert not any(r[0] == "BatchNormalization" for r in summary(UNet(), (96, 128, 3)))


def test_seed_recipe_is_the_assignment_and_the_others_differ_only_where_they_should():
    assert RECIPES["seed"] == RunConfig()
    seed, scratch, default = recipe("seed"), recipe("scratch"), recipe("default")
    assert (seed.train.optimizer, seed.train.lr, seed.train.batch_size, seed.train.epochs) == ("adam", 1e-3, 32, 40)
    assert seed.data == DataConfig() and not seed.model.batch_norm
    assert scratch.model == replace(seed.model, batch_norm=True)
    assert (default.model.encoder, default.model.encoder_weights) == ("efficientnet-lite0", "imagenet")
    # default is scratch's training on the full frames, with an encoder that learns at 0.3 of the
    # rate, for the epochs of 60 that fit in 28 minutes (the limit is 30, decoding included)
    assert default.data == replace(scratch.data, size=(480, 640), paste=1.0)  # and every frame pasted into
    assert default.train == replace(scratch.train, epochs=60, encoder_lr=0.3, time_limit=28, val_every=5)
    assert {r.train.precision for r in RECIPES.values()} == {"auto"}  # precision is the machine's, not the recipe's
    with pytest.raises(ValueError, match="unknown recipe"):
        recipe("fast")


def test_crop_size_is_a_multiple_of_the_network_step():
    assert DataConfig(size=(240, 320), crop=0.8).crop_size(16) == (192, 256)
    assert DataConfig(size=(96, 128), crop=1.0).crop_size(16) == (96, 128)
    assert DataConfig(size=(48, 64), crop=0.1).crop_size(16) == (16, 16)


def test_cli_flags_change_single_settings_of_the_recipe():
    def config(*argv: str) -> RunConfig:
        args = build_parser().parse_args(["train", "data", "--out", "run", *argv])
        args.argv = list(argv)
        return train_config(args)

    assert config("--recipe", "seed") == recipe("seed")
    assert config() == recipe("default")
    changed = config("--recipe", "seed", "--loss", "ce+dice", "--augment", "full", "--batch-norm", "--size", "64x64",
                     "--ignore-index", "0", "--class-crops", "0.5", "--paste", "0.25", "--val-every", "3", "--ema", "0.995")
    assert changed.data.class_crops == 0.5 and changed.data.paste == 0.25 and changed.train.val_every == 3
    assert changed.train.ema == 0.995
    assert config("--encoder-lr", "0.5").train.encoder_lr == 0.5
    assert changed.train.loss == "ce+dice" and changed.model.batch_norm and changed.data.size == (64, 64)
    assert changed.data.augment == "full" and changed.train.ignore_index == 0 and changed.train.lr == 1e-3
    assert not config("--recipe", "scratch", "--no-batch-norm").model.batch_norm
    assert config("--recipe", "scratch", "--no-batch-norm").train == recipe("scratch").train
    assert config("--preset", "original").model.padding == "valid"


@pytest.mark.parametrize("bad", [{"crop": 0.0}, {"crop": 1.5}, {"augment": "rotate"}])
def test_bad_data_settings_are_refused(bad):
    with pytest.raises(ValueError):
        DataConfig(**bad)


@pytest.mark.parametrize("bad", [{"loss": "focal"}, {"optimizer": "sgd"}, {"warmup": 1.0}, {"weight_decay": math.inf},
                                 {"schedule": "step"}, {"class_weights": "inverse"}])
def test_bad_train_settings_are_refused(bad):
    with pytest.raises(ValueError):
        TrainConfig(**bad)


@pytest.mark.parametrize("bad", [-1, 256])
def test_ignore_index_must_be_a_mask_value(bad):
    with pytest.raises(ValueError, match=rf"train.ignore_index must be in \[0, 255\], not {bad}"):
        RunConfig(train=TrainConfig(ignore_index=bad))


def test_ignore_index_beyond_the_classes_is_a_mask_value():
    assert RunConfig(train=TrainConfig(ignore_index=255)).train.ignore_index == 255


def test_a_crop_the_network_cannot_take_is_refused_before_training():
    from pixelwise.model.unet import preset
    from pixelwise.training.checks import check_trainable

    config = RunConfig(model=preset("original", in_channels=3, n_classes=23),
                       data=DataConfig(size=(572, 572), crop=0.5))
    with pytest.raises(ValueError, match="data.crop 0.5 gives 288x288 crops"):
        check_trainable(config)


def test_random_crop_keeps_exact_pixels_of_image_and_mask_alike():
    x, y = _coded(3, 32, 48)
    torch.manual_seed(0)
    xc, yc = random_crop(x, y, (16, 32))
    assert xc.shape == (3, 3, 16, 32) and yc.shape == (3, 16, 32)
    for i in range(3):
        # find where the crop came from: the mask crop must sit at the same place as the image crop
        places = [(t, s) for t in range(17) for s in range(17) if torch.equal(x[i, :, t:t + 16, s:s + 32], xc[i])]
        assert len(places) == 1
        t, s = places[0]
        assert torch.equal(y[i, t:t + 16, s:s + 32], yc[i])
    empty = random_crop(x[:0], y[:0], (16, 32))
    assert empty[0].shape == (0, 3, 16, 32) and empty[1].shape == (0, 16, 32)


def test_a_crop_that_rounds_to_the_whole_image_is_refused():
    from pixelwise.training.checks import check_trainable

    with pytest.raises(ValueError, match="rounds to the whole"):
        check_trainable(RunConfig(data=DataConfig(size=(96, 128), crop=0.95)))


def test_flip_mirrors_image_and_mask_together_with_exact_pixels():
    x, y = _coded(64, 16, 24)
    torch.manual_seed(0)
    xf, yf = random_flip(x, y)
    mirrored = [torch.equal(xf[i], x[i].flip(-1)) and torch.equal(yf[i], y[i].flip(-1)) for i in range(64)]
    kept = [torch.equal(xf[i], x[i]) and torch.equal(yf[i], y[i]) for i in range(64)]
    assert all(m or k for m, k in zip(mirrored, kept))
    assert 16 < sum(mirrored) < 48  # about half
    assert xf.is_contiguous(memory_format=torch.channels_last)


def test_training_transform_of_each_augmentation():
    x, y = _coded(4, 32, 48)
    assert training_transform("none", (32, 48), (32, 48))(x, y) == (x, y)  # the seed recipe: untouched, no draws
    torch.manual_seed(1)
    xc, yc = training_transform("flip", (32, 48), (16, 32))(x, y)
    assert xc.shape == (4, 3, 16, 32) and yc.shape == (4, 16, 32)
    torch.manual_seed(1)
    xa, ya = training_transform("full", (32, 48), (16, 32))(x, y)
    assert xa.shape == (4, 3, 16, 32) and not torch.equal(xa, xc)


def test_zoom_resamples_like_full_without_its_colour_jitter():
    x, y = torch.full((4, 3, 32, 48), 0.5), _coded(4, 32, 48)[1]
    torch.manual_seed(2)
    xz, yz = training_transform("zoom", (32, 48), (16, 32))(x, y)
    torch.manual_seed(2)
    xf, yf = training_transform("full", (32, 48), (16, 32))(x, y)
    assert torch.equal(yz, yf) and not torch.equal(yz, y[:, :16, :32])  # the same zooms and shifts
    assert torch.allclose(xz, torch.tensor(0.5)) and not torch.allclose(xf, torch.tensor(0.5))


def test_configs_written_before_flip_only_augmentation_still_load(tmp_path):
    for old, new in ((True, "full"), (False, "none")):
        config = RunConfig()
        save_config(tmp_path, config)
        text = (tmp_path / "config.json").read_text().replace('"augment": "none"', f'"augment": {str(old).lower()}')
        (tmp_path / "config.json").write_text(text)
        assert load_config(tmp_path).data.augment == new


def _rare_object(n: int, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Masks of class 0 with one 2x2 object of class 1 somewhere in each; red encodes the class."""
    y = torch.zeros(n, h, w, dtype=torch.long)
    for i, (top, left) in enumerate(torch.randint(0, min(h, w) - 2, (n, 2)).tolist()):
        y[i, top:top + 2, left:left + 2] = 1
    x = torch.stack([y.float(), torch.rand(n, h, w), torch.rand(n, h, w)], dim=1)
    return x, y


def test_class_pixels_pick_classes_evenly_not_by_area():
    torch.manual_seed(0)
    _, y = _rare_object(400, 32, 32)  # class 1 is 4 pixels of 1024
    chosen, rows, cols = class_pixels(y, 1.0)
    assert chosen.all()
    picked = y[torch.arange(400), rows, cols]
    assert 150 < int((picked == 1).sum()) < 250  # about half the picks, for 0.4% of the pixels
    y[:, 0, 0] = IGNORE_INDEX
    y[0] = IGNORE_INDEX  # nothing labelled: nothing to pick
    chosen, rows, cols = class_pixels(y, 1.0)
    assert not chosen[0] and chosen[1:].all() and (y[torch.arange(1, 400), rows[1:], cols[1:]] != IGNORE_INDEX).all()
    assert not class_pixels(y, 0.0)[0].any()


def test_class_crops_put_rare_classes_into_crops_with_exact_pixels():
    torch.manual_seed(0)
    x, y = _rare_object(200, 64, 64)
    torch.manual_seed(1)
    _, plain = random_crop(x, y, (16, 16))
    torch.manual_seed(1)
    xc, steered = random_crop(x, y, (16, 16), class_crops=1.0)
    seen_plain, seen_steered = (plain == 1).flatten(1).any(1), (steered == 1).flatten(1).any(1)
    assert seen_plain.float().mean() < 0.2  # a 16x16 crop of 64x64 rarely meets a 2x2 object
    assert seen_steered.float().mean() > 0.4  # picked in about half the crops, and then always inside
    assert torch.equal(xc[:, 0].long(), steered)  # still whole-pixel crops: image and mask alike


def test_class_crops_steer_the_zooming_augmentation_too():
    torch.manual_seed(0)
    x, y = _rare_object(200, 64, 64)
    for share, low, high in ((0.0, 0.0, 0.25), (1.0, 0.4, 1.0)):
        torch.manual_seed(2)
        _, ya = Augment(scale=(2.0, 2.0), color=0.0, class_crops=share)(x, y, (32, 32))  # an eighth of each side
        seen = (ya == 1).flatten(1).any(1).float().mean().item()
        assert low <= seen <= high, (share, seen)


def test_paste_copies_the_small_classes_of_the_previous_frame_exactly():
    torch.manual_seed(0)
    n, h, w = 400, 20, 20
    y = torch.zeros(n, h, w, dtype=torch.long)
    y[:, 10:] = 1  # two large classes, half of each frame
    y[:, :2, :2] = 2  # 1% of the frame: small
    y[:, 5:7, 3:9] = torch.arange(n).view(-1, 1, 1) % 3 + 3  # 3%: small, class 3, 4 or 5 by frame
    y[:, 19, 19] = IGNORE_INDEX
    x = torch.rand(n, 3, h, w)
    torch.manual_seed(3)
    assert torch.equal(paste_small(x, y, 0.0)[1], y)
    after = torch.rand(1)
    torch.manual_seed(3)
    assert torch.equal(torch.rand(1), after)  # no draws without pasting: older runs repeat their crops exactly
    torch.manual_seed(1)
    xp, yp = paste_small(x, y, 1.0)
    donors, donor_x = y.roll(1, 0), x.roll(1, 0)
    pasted = (xp != x).any(1)  # random images: a copied pixel always differs
    assert pasted.any()
    assert torch.equal(yp[pasted], donors[pasted]) and torch.equal(yp[~pasted], y[~pasted])
    assert torch.equal(xp.permute(0, 2, 3, 1)[pasted], donor_x.permute(0, 2, 3, 1)[pasted])
    # Only small classes come across: never the large 0 and 1, nor the unlabelled.
    assert torch.equal(yp[pasted].unique(), torch.tensor([2, 3, 4, 5]))
    took = (yp != y)[:, 5, 3]  # the 3% object differs from the frame's own: was it taken?
    assert 0.35 < took.float().mean() < 0.65  # each small class with probability 1/2
    torch.manual_seed(1)
    half = paste_small(x, y, 0.5)[1]
    assert 0.15 < (half != y)[:, 5, 3].float().mean() < 0.35  # half the frames, half of their donors' classes


def test_class_crops_need_crops_smaller_than_the_image():
    from pixelwise.training.checks import check_trainable

    with pytest.raises(ValueError, match="data.class_crops"):
        check_trainable(RunConfig(data=DataConfig(size=(96, 128), class_crops=0.5)))
    check_trainable(RunConfig(data=DataConfig(size=(96, 128), class_crops=0.5, crop=0.5)))
    check_trainable(RunConfig(data=DataConfig(size=(96, 128), class_crops=0.5, augment="full")))
    with pytest.raises(ValueError, match="data.class_crops"):
        DataConfig(class_crops=1.5)
    with pytest.raises(ValueError, match="paste"):
        DataConfig(paste=-0.1)


@pytest.mark.parametrize("weights", [None, torch.tensor([1.0, 2.0, 0.5, 3.0])])
def test_label_smoothing_is_torch_cross_entropy_with_label_smoothing(weights):
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 5, 6)
    target = torch.randint(0, 4, (2, 5, 6))
    target[0, 0, :] = IGNORE_INDEX
    loss = Criterion("ce", weights, label_smoothing=0.1)(logits, target, pixels=60)
    labelled = target != IGNORE_INDEX
    manual = F.cross_entropy(logits.permute(0, 2, 3, 1)[labelled], target[labelled], weight=weights,
                             label_smoothing=0.1, reduction="sum")
    assert loss.item() == pytest.approx(manual.item() / 60, rel=1e-5)
    config = RunConfig(train=TrainConfig(label_smoothing=0.1))
    assert make_criterion(config, np.zeros((1, 2, 2), np.uint8), np.arange(1)).label_smoothing == 0.1
    with pytest.raises(ValueError, match=r"train.label_smoothing must be in \[0, 1\), not 1.0"):
        TrainConfig(label_smoothing=1.0)
