"""Channel shuffles/permutations, grouped-kernel expansion and kernel composition."""

import torch
import torch.nn.functional as F
from helpers import rel_err
from hypothesis import given
from hypothesis import strategies as st

from factorconv.functional import (
    channel_shuffle,
    compose_kernels,
    expand_grouped_kernel,
    invert_permutation,
    shuffle_permutation,
    take_grouped_kernel,
)


@given(groups=st.integers(1, 6), per_group=st.integers(1, 6))
def test_shuffle_permutation_matches_channel_shuffle(groups: int, per_group: int) -> None:
    c = groups * per_group
    x = torch.randn(2, c, 3, 3)
    perm = shuffle_permutation(c, groups)
    assert torch.equal(channel_shuffle(x, groups), x[:, perm])
    assert torch.equal(x[:, perm][:, invert_permutation(perm)], x)
    # the classic example: 2 groups of 3 -> 0 3 1 4 2 5
    assert shuffle_permutation(6, 2).tolist() == [0, 3, 1, 4, 2, 5]


@given(groups=st.integers(1, 4), cin_g=st.integers(1, 3), cout_g=st.integers(1, 3), k=st.integers(1, 3))
def test_grouped_kernel_expands_to_the_same_conv(groups: int, cin_g: int, cout_g: int, k: int) -> None:
    w = torch.randn(groups * cout_g, cin_g, k, k, dtype=torch.float64)
    x = torch.randn(2, groups * cin_g, 6, 6, dtype=torch.float64)
    dense = expand_grouped_kernel(w, groups)
    assert dense.shape == (groups * cout_g, groups * cin_g, k, k)
    assert rel_err(F.conv2d(x, dense), F.conv2d(x, w, groups=groups)) < 1e-12
    assert torch.equal(take_grouped_kernel(dense, groups), w)


@given(
    c=st.integers(1, 4), m=st.integers(1, 4), o=st.integers(1, 4),
    a=st.integers(1, 3), b=st.integers(1, 3), p=st.integers(1, 3), q=st.integers(1, 3),
)
def test_compose_kernels_equals_two_convs(c: int, m: int, o: int, a: int, b: int, p: int, q: int) -> None:
    first = torch.randn(m, c, a, b, dtype=torch.float64)
    second = torch.randn(o, m, p, q, dtype=torch.float64)
    x = torch.randn(2, c, 9, 9, dtype=torch.float64)
    composed = compose_kernels(first, second)
    assert composed.shape == (o, c, a + p - 1, b + q - 1)
    assert rel_err(F.conv2d(x, composed), F.conv2d(F.conv2d(x, first), second)) < 1e-12
