"""encode_region: a mask given by its crop encodes to the bytes of the full mask."""
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from util.common.mask_codec import encode_binary, encode_region


@settings(max_examples=400, deadline=None)
@given(st.integers(1, 24), st.integers(1, 24), st.data())
def test_a_crop_encodes_as_its_full_mask(height, width, data):
    y0, x0 = data.draw(st.integers(0, height - 1)), data.draw(st.integers(0, width - 1))
    h, w = data.draw(st.integers(0, height - y0)), data.draw(st.integers(0, width - x0))
    density = data.draw(st.sampled_from([0.0, 0.1, 0.5, 0.9, 1.0]))
    seed = data.draw(st.integers(0, 2 ** 31))
    crop = np.random.default_rng(seed).random((h, w)) < density
    full = np.zeros((height, width), bool)
    full[y0:y0 + h, x0:x0 + w] = crop
    assert encode_region(crop, y0, x0, height, width) == encode_binary(full)


def test_full_columns_and_the_last_pixel():
    full = np.zeros((6, 5), bool)
    full[:, 1:3] = True            # runs that continue across column boundaries
    full[5, 4] = True              # the very last pixel
    assert encode_region(full[:, 1:], 0, 1, 6, 5) == encode_binary(full)
