"""Several trained networks of one architecture used as one: the cross-validation folds of
``train --folds`` (or any runs of one model) averaged in probability space, as nnU-Net does."""

from __future__ import annotations

import math

import torch
from torch import nn


class Ensemble(nn.Module):
    """Networks whose class probabilities are averaged. ``forward`` returns the log of the mean
    probabilities: logits in every sense the rest of pixelwise uses them (their softmax is the mean,
    their argmax its most probable class), so one model or many run through the same code, and the
    whole ensemble exports as one ONNX graph.

    Args:
        members: the networks, each mapping N×C×H×W images to N×classes×H×W logits.

    Raises:
        ValueError: fewer than two members.
    """

    def __init__(self, members: list[nn.Module]):
        super().__init__()
        if len(members) < 2:
            raise ValueError(f"an ensemble needs at least 2 members, not {len(members)}")
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # log(mean(p_k)) = logsumexp(log p_k) - log K, stable where a member is very sure.
        log_probs = torch.stack([torch.log_softmax(member(x).float(), dim=1) for member in self.members])
        return torch.logsumexp(log_probs, dim=0) - math.log(len(self.members))
