"""Scores from hand-made confusion matrices, where every number can be checked on paper."""

import math

import numpy as np
import pytest
import torch

from pixelwise.evaluation.metrics import class_ids, confusion_matrix, scores


def test_confusion_matrix_rows_are_truth_columns_prediction():
    truth = torch.tensor([[0, 0, 1, 2]])
    pred = torch.tensor([[0, 1, 1, 1]])
    cm = confusion_matrix(pred, truth, 3)
    assert cm.tolist() == [[1, 1, 0], [0, 1, 0], [0, 1, 0]]


def test_scores_on_a_hand_made_matrix():
    # truth 0: 8 px, 6 right and 2 called 1; truth 1: 4 px, 3 right and 1 called 0; classes 2, 3 absent
    cm = np.array([[6, 2, 0, 0],
                   [1, 3, 0, 0],
                   [0, 0, 0, 0],
                   [0, 0, 0, 0]])
    s = scores(cm)
    assert s.pixel_accuracy == pytest.approx(9 / 12)
    assert s.iou[0] == pytest.approx(6 / (8 + 7 - 6))
    assert s.iou[1] == pytest.approx(3 / (4 + 5 - 3))
    assert s.dice[0] == pytest.approx(2 * 6 / (8 + 7))
    assert math.isnan(s.iou[2]) and math.isnan(s.dice[3])  # absent: neither 0 nor 1
    assert s.miou == pytest.approx((6 / 9 + 3 / 6) / 2)
    assert s.present.tolist() == [True, True, False, False]


def test_class_predicted_but_absent_from_truth_scores_zero_and_stays_out_of_the_mean():
    cm = np.array([[3, 1], [0, 0]])
    s = scores(cm)
    assert s.iou[1] == 0 and s.dice[1] == 0
    assert s.miou == pytest.approx(3 / 4)


def test_perfect_and_empty():
    s = scores(np.diag([5, 0, 7]))
    assert s.miou == 1 and s.pixel_accuracy == 1 and math.isnan(s.iou[1])
    assert math.isnan(scores(np.zeros((3, 3))).miou)


def test_matrices_add_up_across_batches():
    rng = np.random.default_rng(0)
    truth = torch.from_numpy(rng.integers(0, 4, (6, 8, 8)))
    pred = torch.from_numpy(rng.integers(0, 4, (6, 8, 8)))
    whole = confusion_matrix(pred, truth, 4)
    parts = confusion_matrix(pred[:2], truth[:2], 4) + confusion_matrix(pred[2:], truth[2:], 4)
    assert torch.equal(whole, parts) and whole.sum() == 6 * 64


def test_class_ids_match_argmax_with_ties_and_in_any_layout():
    torch.manual_seed(0)
    logits = torch.randint(0, 3, (2, 23, 12, 16)).float()  # many ties: the first index must win
    expected = logits.argmax(1)
    assert torch.equal(class_ids(logits), expected)
    assert torch.equal(class_ids(logits.contiguous(memory_format=torch.channels_last)), expected)
    assert torch.equal(class_ids(logits[0], 0), expected[0])
    tied = torch.zeros(1, 5, 2, 2)
    tied[:, 2] = tied[:, 4] = 1
    assert (class_ids(tied) == 2).all()
