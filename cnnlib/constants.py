"""The study's fixed numbers: chance, and the thresholds its verdicts and readings share.

Each was fixed before looking at any run, and each lives here only: the modules that test a claim against one
(``stats``, ``verdicts``) or describe it in a reading (``analysis``, ``pages``, ``summary``) import it from this module,
which imports nothing of the project, so every layer can read it.
"""

import math

N_CLASSES = 10  # CIFAR-10 (data.CLASSES)
CHANCE = 1 / N_CLASSES  # the accuracy of a uniform guess
CHANCE_LOSS = math.log(1 / CHANCE)  # the cross-entropy of a uniform guess: ln 10 = 2.30
# A net whose accuracy ends within this of chance did not learn (analysis.near_chance); a comparison of
# accuracy losses with a side there is at the floor, where nothing is left to lose (verdicts).
NEAR_CHANCE = 0.05
ALPHA = 0.05  # family-wise error rate of each table of verdicts (Holm)
TIE_MARGIN = 0.01  # two accuracies within 1 point of each other count as tied
FITS_TRAINING = 0.90  # clean training accuracy at which a net counts as fitting its training data
# The backward signal, as log10 of the first/last block's gradient norm: below -1 it vanishes towards the
# input, above +1 it grows, within ±1 neither (verdicts.gradient_outcome; notebook 06 says why tenfold).
GRADIENT_THRESHOLD = 1.0
EXPLOSION_FACTOR = 10.0  # an eval-mode test loss after epoch 1 above this many times CHANCE_LOSS is a blow-up
# The learning-rate control of the degradation family (a recipe variant's tag): the recipe-check setting of He et
# al.'s peak lr (0.1 at batch 128 is 0.4 at batch 512 under linear scaling) at the full profile's weight decay.
LR_CONTROL = "lr0.4_wd0.0005"
