"""Heads by name: create_head / list_heads / register_head."""

from __future__ import annotations

import pytest

from slac.heads import (
    Head,
    LGMHead,
    LinearHead,
    LSoftmaxHead,
    MoMHead,
    SkewLaplaceHead,
    create_head,
    list_heads,
    register_head,
)

EXPECTED = {
    "linear": LinearHead,
    "lsoftmax": LSoftmaxHead,
    "lgm": LGMHead,
    "mom": MoMHead,
    "sl": SkewLaplaceHead,
    "slac": SkewLaplaceHead,
}


def test_list_heads_names_every_head_of_table_3():
    assert list_heads() == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_create_head_builds_the_registered_class(name):
    head = create_head(name, 16, 10)
    assert type(head) is EXPECTED[name] and isinstance(head, Head)
    assert (head.in_features, head.num_classes) == (16, 10)


def test_unknown_name_lists_the_known_heads():
    with pytest.raises(
        ValueError, match="unknown head 'arcface'; known heads: lgm, linear, lsoftmax, mom, sl, slac"
    ):
        create_head("arcface", 16, 10)


def test_sl_is_slac_without_the_angle_constraint():
    assert create_head("sl", 4, 3).angle_weight == 0.0
    assert create_head("sl", 4, 3, angle_weight=0).angle_weight == 0.0
    slac = create_head("slac", 4, 3)
    assert (slac.angle_weight, slac.likelihood_weight) == (0.1, 0.01)  # Eq. 9 defaults
    with pytest.raises(ValueError, match="angle_weight"):
        create_head("sl", 4, 3, angle_weight=0.1)


def test_options_reach_the_head():
    head = create_head("slac", 4, 3, likelihood_weight=0.5, angle_weight=0.2, learn_skewness=False)
    assert (head.likelihood_weight, head.angle_weight) == (0.5, 0.2)
    assert not head.skewness.requires_grad
    assert create_head("lsoftmax", 4, 3, margin=4).margin == 4
    assert create_head("mom", 4, 3, num_components=3).loc.shape == (3, 3, 4)


def test_a_name_cannot_be_registered_twice():
    with pytest.raises(ValueError, match="already registered"):
        register_head("slac")(lambda in_features, num_classes: None)
