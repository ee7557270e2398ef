"""Angles between the classes' skewness directions of trained SL/SLAC heads (the Figure 3 claim).

    python scripts/skewness_angles.py RUN...

For each run: the mean pairwise cosine of the skewness vectors gamma_k (off the diagonal; -1/(K-1) is
the most spread-out K directions can be, 1 means all tails point the same way) and the angle-constraint
loss L_ac (Eq. 8) of the trained head. Reads checkpoints/last.pt.
"""

from __future__ import annotations

import sys

import torch

from slac.heads.losses import angle_constraint, skewness_cosine
from slac.train import load_checkpoint


def main(runs: list[str]) -> int:
    print("| run | head | mean pairwise cos(gamma) | L_ac |")
    print("|---|---|---:|---:|")
    for run in runs:
        state = load_checkpoint(run)
        weights = state["model"]
        if "head.skewness" not in weights:
            print(f"| {run} | {state['config']['head']} | (no skewness) | |")
            continue
        gamma, loc, log_var = weights["head.skewness"], weights["head.loc"], weights["head.log_variance"]
        cosines = skewness_cosine(gamma.double())
        k = cosines.shape[0]
        off_diagonal = cosines[~torch.eye(k, dtype=torch.bool)]
        loss = angle_constraint(loc.double(), log_var.double(), gamma.double())
        print(f"| {run} | {state['config']['head']} | {off_diagonal.mean():.3f} | {loss:.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
