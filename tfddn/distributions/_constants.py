"""Floors and clips shared by the TF and numpy sides (one value each, no TF import)."""

MEAN_EPSILON = 1e-6
"""CTR means are clipped into `[MEAN_EPSILON, 1 - MEAN_EPSILON]` (measurement variance,
Beta component means)."""

MIN_STDDEV = 1e-6
"""Floor on every Gaussian scale (component and convolved), below the head's own."""

MIN_PARAMETER = 1e-6
"""Floor on Beta `alpha` and `beta`, below the head's concentration floor."""

MAX_CONCENTRATION = 1e12
"""Cap on a moment-matched Beta's concentration (a Gaussian of near-zero variance)."""
