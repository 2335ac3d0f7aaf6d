"""add_window: a mask's runs painted into a window equal the window of the decoded mask; vote_mask built
on it equals the dense weighted vote."""
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from pycocotools import mask as mask_utils

from util.common.mask_codec import encode_binary
from util.common.rle_runs import add_window
from util.post.mask_nms import vote_mask


def _rle(mask):
    return mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 40), st.integers(1, 40), st.data())
def test_a_painted_window_is_the_decoded_window(height, width, data):
    density = data.draw(st.sampled_from([0.0, 0.05, 0.5, 0.95, 1.0]))
    mask = np.random.default_rng(data.draw(st.integers(0, 2 ** 31))).random((height, width)) < density
    y0, x0 = data.draw(st.integers(0, height)), data.draw(st.integers(0, width))
    y1, x1 = data.draw(st.integers(y0, height)), data.draw(st.integers(x0, width))
    acc = np.full((y1 - y0, x1 - x0), 0.25)
    add_window(_rle(mask)['counts'], height, y0, y1, x0, x1, 1.5, acc)
    assert np.array_equal(acc, 0.25 + 1.5 * mask[y0:y1, x0:x1])


def test_long_runs_across_columns_and_a_large_image():
    mask = np.zeros((1000, 700), bool)
    mask[900:, 10:600] = True                       # runs over many column boundaries
    mask[:, 650:] = True                            # one run up to the last pixel
    acc = np.zeros((1000, 700))
    add_window(_rle(mask)['counts'].decode(), 1000, 0, 1000, 0, 700, 1.0, acc)   # str counts too
    assert np.array_equal(acc, mask)


@settings(max_examples=150, deadline=None)
@given(st.integers(2, 30), st.integers(2, 30), st.integers(1, 5), st.integers(0, 2 ** 31))
def test_vote_mask_equals_the_dense_vote(height, width, n, seed):
    rng = np.random.default_rng(seed)
    masks = []
    for _ in range(n):
        m = np.zeros((height, width), bool)
        y, x = rng.integers(0, height), rng.integers(0, width)
        m[y:y + rng.integers(1, height + 1), x:x + rng.integers(1, width + 1)] = rng.random() < 0.9
        m &= rng.random((height, width)) < 0.8
        masks.append(m)
    weights = rng.uniform(0.1, 1.0, n).tolist()
    dense = sum(w * m for w, m in zip(weights, masks)) / sum(weights) > 0.5
    assert vote_mask([_rle(m) for m in masks], weights) == encode_binary(dense)
