"""Where the BN doctor draws its lines, each with the measurement behind it.

The accuracy thresholds are set against seed noise: how much the final test accuracy of
the same LeNet recipe moves from one seed to another, in the committed study reports
(LeNet on real CIFAR-10, 10 epochs, 45,000 images, 3 seeds each). The standard deviations
over seeds of their arms' final test accuracy:

- experiments/results/study_compare.md: 0.0047, 0.0047, 0.0066, 0.0057;
- experiments/results/study_momentum.md: 0.0068, 0.0046;
- experiments/results/study_placement.md: 0.0058, 0.0037, 0.0079.
"""

from __future__ import annotations

# The largest of those standard deviations (study_placement.md, its no_bn arm).
SEED_NOISE = 0.0079
# A measured accuracy cost (what re-estimating the statistics gains, or a gap between
# training and inference mode) below COST_WARNING is within what another seed does:
# info. From COST_WARNING (above the largest seed spread) a warning; from COST_ERROR
# (nearly 4x the largest seed spread, beyond anything a seed moved in these studies) an
# error. For scale: with the default momentum 0.99, LeNet after 10 epochs gains 0.0151
# from re-estimated statistics (study_momentum.md: 0.6182 -> 0.6333), a warning.
COST_WARNING = 0.01
COST_ERROR = 0.03
# A measured cost must also stand out of the measurement's own sampling error (paired:
# the examples whose prediction the statistics change): at least this many standard
# errors, or it is reported as within the noise of the sample.
MEASUREMENT_Z = 2.0

# Batch size per BN group (per replica, the global batch with synchronized BN, the ghost
# group with virtual_batch_size), from experiments/results/study_batch_quick.md (LeNet,
# 4,000 images, 1 epoch, 3 seeds, test accuracy): at batch 2, BN 0.1797 +- 0.0023 vs no
# BN 0.3255 +- 0.0283 (BN costs 14.6 points; batch renorm 0.1804 and re-estimated
# statistics 0.1910 do not rescue it); at batch 8, BN 0.3710 vs no BN 0.3264 (BN helps,
# as at 32 and 128). The full normalization-batch study (experiments/results/
# study_norm_batch.md: LeNet, SGD batch 128 for every arm, BN normalizing groups of k,
# 10 epochs, 3 seeds; BN with statistics re-estimated for the final weights) measures the
# BN group alone: groups of 2 0.3542 +- 0.0150, of 4 0.5944 +- 0.0034, of 8 0.6385 +-
# 0.0135, of 16 0.6525 +- 0.0047, the whole 128 0.6327 +- 0.0062; LayerNorm 0.6234,
# GroupNorm 0.6197, no normalization 0.6268; at a true SGD batch of 8, BN 0.6583 against
# GroupNorm 0.6392. At most SMALL_BATCH_ERROR: an error (BN 27 points behind the others);
# up to SMALL_BATCH_WARNING: a warning (4 per group: about 3 points behind, beyond the
# seed spread); from 8 on BN is the best of them.
SMALL_BATCH_ERROR = 2
SMALL_BATCH_WARNING = 7
BATCH_STUDY = "experiments/results/study_batch_quick.md"
NORM_BATCH_STUDY = "experiments/results/study_norm_batch.md"

# How much of the moving statistics is still their initial value (mean 0, variance 1):
# momentum ** updates. From INITIAL_WEIGHT_WARNING on the initial values outweigh what
# was learned: a warning; from INITIAL_WEIGHT_INFO on: info. Not an error by itself: in
# study_batch_quick.md, after 32 updates at momentum 0.99 (0.72 of the initial values
# left) re-estimating the statistics changed nothing (0.3304 vs 0.3310), since early in
# training the true statistics are near the initial ones. What it costs, the data checks
# measure.
INITIAL_WEIGHT_WARNING = 0.5
INITIAL_WEIGHT_INFO = 0.05

# A channel whose moving variance is below COLLAPSED_VARIANCE times the median of its
# layer's (its spread under 1% of a typical channel's) carries no signal: a dead ReLU or
# a filter gone to zero before it. Infos, a warning when at least COLLAPSED_SHARE of the
# layer's channels are so.
COLLAPSED_VARIANCE = 1e-4
COLLAPSED_SHARE = 0.5
# A channel with |gamma| below GAMMA_OFF is switched off (its output is beta, a
# constant); gamma starts at 1 (0 with zero_init_residual, which training moves off 0).
GAMMA_OFF = 1e-3

# The data guard: wrong preprocessing (raw pixels for a model trained on standardized
# ones) shows first at the first BN layer, whose input is a linear function of the
# model's input. When that layer's trained moving statistics and the data's disagree by
# more than a factor DATA_MISMATCH_VARIANCE_RATIO in the median variance, or by more
# than DATA_MISMATCH_SHIFT standard deviations in the median mean, the data is taken as
# not the model's, and no cost is read from it. Measured in
# experiments/results/bn_doctor.md (LeNet, real CIFAR-10): with the right preprocessing
# the guarded first layers of the catalogue stay within 0.71x to 1.07x and 0.05 standard
# deviations (EMA weights, stale statistics and batch 2 included); raw pixels give about
# 4,000x and 24 standard deviations, pixels in [0, 1] 0.062x. The thresholds sit between,
# a factor of 4 from the wrong data's [0, 1] case and 2.8 from the right data's widest.
DATA_MISMATCH_VARIANCE_RATIO = 4.0
DATA_MISMATCH_SHIFT = 2.0

# Per-layer statistics error (LayerStatistics.error, in output standard deviations) from
# which a layer is named in a stale-statistics finding.
LAYER_ERROR_NOTED = 0.1
# Evidence lists stop after this many layers ("and N more").
LAYERS_LISTED = 4
