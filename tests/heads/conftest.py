"""Shared helpers for the head tests: the registered names and a separable 2-D toy problem."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch

from slac.distributions import MultivariateSkewLaplace
from slac.heads import Head, create_head


def skewed_clusters(
    seed: int, per_class: int = 50, num_classes: int = 4, skew: tuple[float, float] = (0.3, 0.0)
) -> tuple[torch.Tensor, torch.Tensor]:
    """K clusters at radius 3 (angles 45 + 360 k / K degrees), each drawn from SL(center, 0.05 I, skew).

    All clusters have their heavy tail in the same direction `skew`; they are separable (every head
    reaches > 97 % accuracy). Returns features (K * per_class, 2) float32 and targets.
    """
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    angles = torch.arange(num_classes) * 2 * math.pi / num_classes + math.pi / 4
    centers = 3.0 * torch.stack([angles.cos(), angles.sin()], dim=1)
    dist = MultivariateSkewLaplace(
        centers, torch.full((num_classes, 2), 0.05), torch.tensor(skew).expand(num_classes, 2)
    )
    features = dist.sample((per_class,)).reshape(-1, 2)  # (per_class, K, 2) -> (per_class * K, 2)
    targets = torch.arange(num_classes).repeat(per_class)
    torch.random.set_rng_state(generator_state)
    return features, targets


@pytest.fixture(scope="session")
def toy_problem() -> Callable[..., tuple[torch.Tensor, torch.Tensor]]:
    return skewed_clusters


def train_head(
    name: str, features: torch.Tensor, targets: torch.Tensor, *, steps: int = 150, seed: int = 0, **options
) -> Head:
    """Full-batch Adam (lr 0.05) on a head alone; the head is returned in eval mode."""
    torch.manual_seed(seed)
    head = create_head(name, features.shape[1], int(targets.max()) + 1, **options)
    optimizer = torch.optim.Adam(head.parameters(), lr=0.05)
    for _ in range(steps):
        logits = head(features, targets)
        loss = head.loss(features, logits, targets)
        optimizer.zero_grad()
        loss.total.backward()
        optimizer.step()
    return head.eval()


@pytest.fixture(scope="session")
def trainer() -> Callable[..., Head]:
    return train_head
