"""mask_codec: the one strict EncodedMask decoder, against pycocotools and the lenient decode it replaced."""
import base64
import pickle
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pycocotools import mask as mask_utils

from util.common.errors import DataError
from util.common.mask_codec import (
    check_encoded,
    check_rles,
    decode_encoded,
    decode_encoded_batch,
    decode_mask,
    decode_runs_batch,
    encode_mask,
    encoded_to_rle,
    rle_to_encoded,
    run_totals,
    with_counts,
)


def coco_counts(runs, h, w) -> bytes:
    """pycocotools' compressed counts of explicit runs (whatever they add up to)."""
    return mask_utils.frPyObjects({'size': [h, w], 'counts': list(runs)}, h, w)['counts']


def pack(counts: bytes) -> str:
    return base64.b64encode(zlib.compress(counts, 9)).decode()


@settings(max_examples=60, deadline=None)
@given(h=st.integers(1, 9), w=st.integers(1, 9), data=st.data())
def test_round_trip_against_pycocotools(h, w, data):
    mask = np.array(data.draw(st.lists(st.booleans(), min_size=h * w, max_size=h * w)), np.uint8).reshape(h, w)
    enc = encode_mask(mask)
    want = mask_utils.encode(np.asfortranarray(mask))['counts']
    assert zlib.decompress(base64.b64decode(enc)) == want
    assert decode_encoded(enc, h, w) == {'size': [h, w], 'counts': want}
    assert (decode_mask(enc, h, w) == mask).all()
    assert encoded_to_rle(enc, h, w)['counts'] == want.decode()
    assert rle_to_encoded({'size': [h, w], 'counts': want.decode()}) == enc


def test_characters_outside_base64_are_an_error_not_dropped():
    enc = encode_mask(np.eye(4, dtype=np.uint8))
    broken = enc[:4] + '!' + enc[4:]
    assert base64.b64decode(broken) == base64.b64decode(enc)      # the lenient decode scored this
    with pytest.raises(DataError, match='not base64'):
        decode_encoded(broken, 4, 4)


@pytest.mark.parametrize('make,message', [
    (lambda e: e[:-4], 'truncated zlib'),
    (lambda e: 'AAAA', 'not zlib'),
    (lambda e: base64.b64encode(base64.b64decode(e) + b'xy').decode(), 'bytes after its zlib data'),
    (lambda e: '', 'empty'),
    (lambda e: e.encode(), 'not a string'),
])
def test_broken_layers_are_named(make, message):
    enc = encode_mask(np.eye(4, dtype=np.uint8))
    with pytest.raises(DataError, match=message):
        decode_encoded(make(enc), 4, 4)


@pytest.mark.parametrize('runs,what', [([0, 3, 1, 3], 'cover 7 pixels'), ([0, 3, 1, 3, 10], 'cover 17 pixels'),
                                       ([], 'cover 0 pixels')])
def test_runs_must_add_up_to_the_image(runs, what):
    """pycocotools' iou never returns on such masks (issue 12), so they never reach it."""
    with pytest.raises(DataError, match=f'mask is not 4x4 \\(its runs {what}, expected 16\\)'):
        decode_encoded(pack(coco_counts(runs, 4, 4)), 4, 4)


def test_negative_runs_are_malformed():
    # pycocotools stores runs as uint32: a "negative" run would be read as about 4e9 pixels.
    # Runs 2, 4, -2, 4 add up to the 8 pixels of a 4x2 image; the fourth is stored as 4 - 4 = 0.
    bad = b'24' + bytes([48 + 0x1e]) + b'0'              # 0x1e: one character, sign bit set: -2
    assert run_totals([bad])[0] == -1
    with pytest.raises(DataError, match='malformed counts'):
        decode_encoded(pack(bad), 4, 2)


@pytest.mark.parametrize('h,w', [(0, 4), (4, -1), (True, 4), (2.0, 4)])
def test_sizes_must_be_positive_integers(h, w):
    with pytest.raises(DataError, match='not two positive integers'):
        decode_encoded(encode_mask(np.eye(4, dtype=np.uint8)), h, w)


def test_batch_names_the_place_and_check_lists_every_problem():
    good = encode_mask(np.eye(4, dtype=np.uint8))
    short = pack(coco_counts([0, 3, 1, 3], 4, 4))
    rles, problems = check_encoded([good, short, good + '!', good], 4, 4)
    assert [r is None for r in rles] == [False, True, True, False]
    assert [k for k, _ in problems] == [1, 2] and 'cover 7 pixels' in problems[0][1]
    with pytest.raises(DataError, match=r'^s\.csv:3: image a: detection 2: mask is not 4x4'):
        decode_encoded_batch([good, short], 4, 4, 's.csv:3: image a')
    with pytest.raises(DataError, match=r'^x\.csv:9: detection 7: EncodedMask is not base64'):
        decode_encoded_batch([good, good + '!'], 4, 4, lambda k: f'x.csv:9: detection {k + 6}')
    assert decode_encoded_batch([], 4, 4, 'anything') == []


def test_check_rles_accepts_str_and_bytes_and_refuses_the_rest():
    rle = mask_utils.encode(np.asfortranarray(np.eye(3, 2, dtype=np.uint8)))
    as_str = {'size': [3, 2], 'counts': rle['counts'].decode()}
    assert check_rles([rle, as_str], 3, 2) == [{'size': [3, 2], 'counts': rle['counts']}] * 2
    for bad, message in [({'size': [2, 3], 'counts': rle['counts']}, 'mask is 2x3, the image is 3x2'),
                         ({'size': [3, 2], 'counts': [0, 6]}, 'must be compressed'),
                         ({'size': [3, 2], 'counts': '\u00e9'}, 'not ASCII'),
                         ({'size': [3, 2], 'counts': coco_counts([1, 2], 3, 2)}, 'cover 3 pixels')]:
        with pytest.raises(DataError, match=f'r:1: image q: detection 2: .*{message}'):
            check_rles([rle, bad], 3, 2, 'r:1: image q')


@settings(max_examples=80, deadline=None)
@given(st.lists(st.one_of(st.binary(max_size=10), st.lists(st.integers(0, 70), max_size=8).map(
    lambda runs: coco_counts(runs, 1, max(1, sum(runs))))), max_size=8))
def test_run_totals_of_a_batch_are_those_of_each_string(strings):
    """The batched parser restarts every string's chains: the totals never depend on the neighbours."""
    assert list(run_totals(strings)) == [int(run_totals([s])[0]) for s in strings]


def test_run_totals_of_valid_masks_in_one_batch():
    rng = np.random.default_rng(0)
    masks = [rng.random((int(rng.integers(1, 60)), int(rng.integers(1, 60)))) < p for p in (0, 0.02, 0.5, 1)
             for _ in range(5)]
    counts = [mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))['counts'] for m in masks]
    assert list(run_totals(counts)) == [m.size for m in masks]


def test_a_mask_encoded_here_reads_back_as_its_plain_string_and_travels_as_one():
    mask = np.zeros((37, 21), np.uint8)
    mask[5:30, 2:9] = 1
    made = encode_mask(mask)
    plain = str(made)
    assert made == plain and type(pickle.loads(pickle.dumps(made))) is str
    assert decode_encoded(made, 37, 21) == decode_encoded(plain, 37, 21)
    assert np.array_equal(decode_mask(made, 37, 21), mask)
    with pytest.raises(DataError, match='mask is not 36x21'):         # the runs are still checked
        decode_encoded(made, 36, 21)


def test_runs_batch_checks_as_the_rle_batch_and_reads_the_same_masks():
    """The metric's path (runs read in the pass that checks them) refuses what decode_encoded_batch
    refuses, with the same first error, and reads what it accepts as pycocotools decodes it."""
    rng = np.random.default_rng(5)
    masks = [rng.random((6, 5)) < p for p in (0.0, 0.3, 0.7, 1.0)]
    good = [encode_mask(m.astype(np.uint8)) for m in masks]
    runs = decode_runs_batch(good, 6, 5, 'x')
    assert runs.areas.tolist() == [int(m.sum()) for m in masks] and runs.totals.tolist() == [30] * 4
    short, long_ = pack(coco_counts([0, 3, 1, 3], 6, 5)), pack(coco_counts([0, 31], 6, 5))
    negative = pack(b'24' + bytes([48 + 0x1e]) + b'0')
    for batch in ([good[0], short], [long_, good[1] + '!'], [good[2] + '!', short], [negative, good[0]],
                  [good[1], 'AAAA', long_], [good[0], ''], [good[3], good[0][:-4]]):
        with pytest.raises(DataError) as want:
            decode_encoded_batch(batch, 6, 5, lambda k: f'f.csv:2: image i: detection {k + 1}')
        with pytest.raises(DataError) as got:
            decode_runs_batch(batch, 6, 5, lambda k: f'f.csv:2: image i: detection {k + 1}')
        assert str(got.value) == str(want.value)
    with pytest.raises(DataError, match='^img: image size 5x0'):
        decode_runs_batch(good, 0, 5, 'img')


def test_a_mask_passed_on_keeps_the_counts_it_was_read_to():
    mask = np.zeros((9, 7), np.uint8)
    mask[2:6, 1:4] = 1
    plain = str(encode_mask(mask))
    kept = with_counts(plain, decode_encoded(plain, 9, 7))
    assert kept == plain and kept.counts == decode_encoded(plain, 9, 7)['counts']
    assert type(pickle.loads(pickle.dumps(kept))) is str
    assert decode_runs_batch([kept], 9, 7).areas.tolist() == [12]
