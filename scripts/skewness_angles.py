"""Angles between the classes' skewness directions of trained SL/SLAC heads (the Figure 3 claim).

    python scripts/skewness_angles.py RUN...

For each run: the mean pairwise cosine of the skewness vectors gamma_k (off the diagonal; -1/(K-1) is
the most spread-out K directions can be, 1 means all tails point the same way) and the angle-constraint
loss L_ac (Eq. 8) of the trained head. Reads checkpoints/last.pt.
"""

from __future__ import annotations

import sys

from slac.analysis.tails import skewness_angles
from slac.train import load_checkpoint


def main(runs: list[str]) -> int:
    print("| run | head | mean pairwise cos(gamma) | L_ac |")
    print("|---|---|---:|---:|")
    for run in runs:
        checkpoint = load_checkpoint(run)
        head = checkpoint["config"]["head"]
        angles = skewness_angles(checkpoint)
        if angles is None:
            print(f"| {run} | {head} | (no skewness) | |")
            continue
        print(f"| {run} | {head} | {angles['mean_cosine']:.3f} | {angles['angle_loss']:.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
