"""Run one training in its own process and SIGKILL it right after a chosen epoch (see test_train.py).

The kill comes from inside, at a point the test controls (after the epoch's checkpoint
decision), so the test does not depend on timing or machine load.
"""

import os
import signal
import sys

from synthetic import synthetic_cifar

from cnnlib.train import fit, make_config


def _die_after(epoch: int):
    def hook(done: int):
        if done == epoch:
            os.kill(os.getpid(), signal.SIGKILL)

    return hook


if __name__ == "__main__":
    epochs, kill_after = int(sys.argv[1]), int(sys.argv[2])
    cfg = make_config("resnet20", "smoke", epochs=epochs, train_subset=500, test_subset=100)
    fit(cfg, data=synthetic_cifar(50, 10), device="cpu", verbose=False, on_epoch_end=_die_after(kill_after))
