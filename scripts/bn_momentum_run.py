"""`slac train` with every BatchNorm's momentum set to a value of one's choosing before training: one of the
alternatives to BatchNorm recalibration measured in REPRODUCTION.md ("BatchNorm lag").

    python scripts/bn_momentum_run.py 0.6 --name mom0.6 --progress false     (then slac train's flags)
"""

from __future__ import annotations

import sys

from torch import nn

from slac.train import Trainer, load_config

if __name__ == "__main__":
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    momentum = float(sys.argv[1])
    trainer = Trainer(load_config(None, sys.argv[2:]))
    for module in trainer.model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.momentum = momentum
    trainer.fit()
