"""``slac train`` with every training batch presented in reverse order, for the DDP test's noise floor.

The model, the data and every batch's contents are those of the plain run; only the order of the terms in
each sum over a batch changes (batch norm statistics, the loss mean, the weight-gradient GEMMs), as it does
when DistributedDataParallel splits the batch into per-process sums. The difference between this run and
the plain one is therefore what float rounding alone does to the weights on this machine.

    python tests/train/reversed_batches.py --key value ...   (the flags of slac train)
"""

from __future__ import annotations

import sys

from slac.train import Trainer, load_config


class ReversedBatches:
    """A training loader whose batches are the wrapped loader's, reversed along the batch axis."""

    def __init__(self, loader) -> None:
        self.loader = loader

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for images, labels in self.loader:
            yield images.flip(0), labels.flip(0)

    def state_dict(self):
        return self.loader.state_dict()

    def load_state_dict(self, state) -> None:
        self.loader.load_state_dict(state)


if __name__ == "__main__":
    trainer = Trainer(load_config(None, sys.argv[1:]))
    trainer.data.train = ReversedBatches(trainer.data.train)
    trainer.fit()
