"""The CPU speed model of the operators: every constant by which an operator decides how to run, in one table,
each with the measurement it came from. Operators decide between the kernel path (compose the dense kernel,
one conv) and the feature path (their factors as a chain of thin convs) by MACs scaled by these rates; a
group-conv chain decides whether its trailing 1x1 group convs run as one dense 1x1; a channel gather decides
between a one-hot matmul and index_select. Measured with torch 2.13 on 2 CPU cores (channels_last unless
said otherwise); `factorconv bench ops` shows both paths forced beside the automatic choice.
"""

from __future__ import annotations

__all__ = ["FEATURE_PATH_MARGIN", "GATHER_MAC_EQUIVALENT", "GATHER_MATMUL_MAX_CHANNELS", "GROUP_RATE_CHANNELS",
           "SSEP_FEATURE_PATH_MARGIN"]

# The feature path (a chain of thin convs: depthwise, grouped, 1x1 with many channels) must save this factor
# of MACs to be chosen: such convs run at a fraction of a dense conv's rate (depthwise 3x3 ~15 GMAC/s,
# grouped 3x3 with 3 channels per group ~9, dense 3x3 ~67).
FEATURE_PATH_MARGIN = 2.0
# Spatial-separable convs (k x 1 then 1 x k) are two dense convs: they run at a dense conv's rate, so their
# feature path is chosen as soon as it saves MACs (64->64 on 32x32: the feature path at 0.76-0.80x the kernel
# path's time for 2/3 of its MACs).
SSEP_FEATURE_PATH_MARGIN = 1.0
# Trailing 1x1 group convs of a chain, in units of dense MACs: a group conv with n input channels per group
# runs at about n/32 of a dense conv's rate below 32 (3-7 channels: ~5-9 GMAC/s against 47-67) ...
GROUP_RATE_CHANNELS = 32
# ... and a channel gather (shuffle, padding, truncation) costs about as much as 16 MACs per element it moves.
GATHER_MAC_EQUIVALENT = 16
# A gather of a channels_last tensor runs as a matmul with a one-hot selector up to this many input channels
# (forward + backward 4.5x faster than index_select at 42-128 channels; 0.76x at 400; 1.5x slower at 800,
# batch 128), and as index_select above.
GATHER_MATMUL_MAX_CHANNELS = 512
