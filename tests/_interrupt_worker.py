"""Run one training in its own process, so a test can kill it mid-run (see test_train.py)."""

import sys

from synthetic import synthetic_cifar

from cnnlib.train import fit, make_config

if __name__ == "__main__":
    cfg = make_config("resnet20", "smoke", epochs=int(sys.argv[1]), train_subset=500, test_subset=100)
    fit(cfg, data=synthetic_cifar(50, 10), device="cpu")
