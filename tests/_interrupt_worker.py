"""Run one training in its own process and SIGKILL it right after a chosen epoch (see test_train.py).

The kill comes from inside, at a point the test controls (after the epoch's checkpoint
decision), so the test does not depend on timing or machine load.
"""

import os
import signal
import sys

from synthetic import synthetic_cifar

from cnnlib.config import make_config
from cnnlib.train import Callback, fit


class DieAfter(Callback):
    def __init__(self, epoch: int):
        self.epoch = epoch

    def after_epoch(self, row: dict) -> None:
        if row["epoch"] == self.epoch:
            os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    epochs, kill_after = int(sys.argv[1]), int(sys.argv[2])
    cfg = make_config("resnet20", "smoke", epochs=epochs, train_subset=500, test_subset=100)
    fit(cfg, data=synthetic_cifar(50, 10), device="cpu", verbose=False, callbacks=[DieAfter(kill_after)])
