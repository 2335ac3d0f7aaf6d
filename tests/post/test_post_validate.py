"""The submission validator: a good file passes, every kind of fault is reported with file:line."""
import os

import numpy as np
from _post_reference import HEADER, encode, run_cli, write_csv

from util.post.validate import validate_submission

M = np.zeros((3, 4), np.uint8)
M[1, 1:3] = 1
GOOD = encode(M)
WRONG_SIZE = encode(np.ones((5, 4), np.uint8))         # 20 pixels for a 3 x 4 image
EMPTY = encode(np.zeros((3, 4), np.uint8))


def write_sample(path, ids, size=(4, 3)):
    path.write_text(','.join(HEADER) + '\n' + ''.join(f'{i},{size[0]},{size[1]},\n' for i in ids))


def test_a_good_submission_passes(tmp_path):
    write_sample(tmp_path / 'sample.csv', ['a', 'b', 'c'])
    write_csv(str(tmp_path / 's.csv'), [('c', 4, 3, [('/m/0kmg4', 0.5, GOOD), ('/m/01dws', 1.0, EMPTY)]),
                                        ('a', 4, 3, []), ('b', 4, 3, [('/m/02zt3', 0, GOOD)])])
    rep = validate_submission(str(tmp_path / 's.csv'), str(tmp_path / 'sample.csv'),
                              classes=['/m/0kmg4', '/m/01dws', '/m/02zt3'])
    assert rep.ok, rep.problems
    assert (rep.images, rep.detections, rep.max_per_image, rep.max_image, rep.empty_masks) == \
        (3, 3, 2, 'c', 1)
    p = run_cli('-m', 'util.post.validate', str(tmp_path / 's.csv'),
                '--ids', str(tmp_path / 'sample.csv'))
    assert p.returncode == 0 and 'OK' in p.stderr


def test_every_fault_is_listed(tmp_path):
    write_sample(tmp_path / 'sample.csv', ['a', 'b', 'c', 'd', 'e', 'missing'])
    (tmp_path / 'sizes.csv').write_text('ImageID,ImageWidth,ImageHeight\ne,5,3\n')
    rows = [
        'a,4,3,/m/0kmg4 0.5 ' + GOOD,                        # line 2: fine
        'a,4,3,',                                            # 3: listed twice
        'b,4,3,/m/0kmg4 1.5 ' + GOOD + ' /m/nope 0.5 ' + GOOD,   # 4: score out of range, unknown label
        'c,4,3,/m/0kmg4 nan ' + WRONG_SIZE,                  # 5: nan score, mask of the wrong size
        'd,4,3,/m/0kmg4 0.5',                                # 6: not a triple
        'e,4,3,/m/0kmg4 0.5 @@@@',                           # 7: size differs from sizes.csv; bad mask
        'x,4,3,',                                            # 8: not a test image
        'y,four,3,',                                         # 9: size not an integer
        'z,4,3',                                             # 10: three columns
    ]
    (tmp_path / 's.csv').write_text(','.join(HEADER) + '\n' + '\n'.join(rows) + '\n')
    rep = validate_submission(str(tmp_path / 's.csv'), str(tmp_path / 'sample.csv'), classes=['/m/0kmg4'],
                              sizes=str(tmp_path / 'sizes.csv'), max_dets=1)
    text = '\n'.join(rep.problems)
    s = str(tmp_path / 's.csv')
    for want in [f'{s}:3: image a: listed again (first at line 2)',
                 f'{s}:4: image b: 2 detections, more than the limit 1',
                 f"{s}:4: image b: detection 1: confidence '1.5' is not a number in [0, 1]",
                 f"{s}:4: image b: detection 2: label '/m/nope' is not in the class list",
                 f"{s}:5: image c: detection 1: confidence 'nan'",
                 f'{s}:5: image c: detection 1: mask is not 3x4 (its runs cover',
                 f'{s}:6: image d: PredictionString has 2 fields',
                 f'{s}:7: image e: size 4x3, the image is 5x3',
                 f'{s}:7: image e: detection 1: EncodedMask is not base64',
                 f'{s}:8: image x: not a test image',
                 f'{s}:9: image y: width/height',
                 f'{s}:10: 3 columns',
                 f'{s}: image missing is missing']:
        assert want in text, (want, text)
    assert rep.n_problems == 13 and not rep.ok
    p = run_cli('-m', 'util.post.validate', s, '--ids', str(tmp_path / 'sample.csv'))
    assert p.returncode != 0 and 'INVALID' in p.stderr and f'{s}:3: image a: listed again' in p.stdout


def test_header_and_file_size(tmp_path):
    (tmp_path / 's.csv').write_text('ImageId,Width,Height,PredictionString\na,4,3,\n')
    rep = validate_submission(str(tmp_path / 's.csv'), max_bytes=10)
    assert rep.problems[0].endswith("expected ImageID,ImageWidth,ImageHeight,PredictionString")
    assert 'more than the limit 10' in rep.problems[-1] and rep.n_problems == 2
    assert os.path.getsize(tmp_path / 's.csv') == rep.file_bytes


def test_more_than_255_masks_in_an_image(tmp_path):
    # pycocotools' area() overflows on batches over 255 masks; the validator must not.
    dets = [('/m/0kmg4', 0.5, GOOD), ('/m/0kmg4', 0.5, EMPTY)] * 150
    write_csv(str(tmp_path / 's.csv'), [('a', 4, 3, dets)])
    rep = validate_submission(str(tmp_path / 's.csv'))
    assert rep.ok and rep.detections == 300 and rep.empty_masks == 150


def test_quotes_lines_and_a_missing_last_newline(tmp_path):
    s = tmp_path / 's.csv'
    s.write_text(','.join(HEADER) + f'\na,4,3,/m/0kmg4 0.5 {GOOD}\n"b,4,3,\nc,4,3,\nd,4,3,"')
    rep = validate_submission(str(s))
    assert rep.problems == [f'{s}:3: a double quote at column 1: the submission format has no quoting',
                            f'{s}:5: a double quote at column 7: the submission format has no quoting']
    assert rep.images == 2 and rep.warnings == [f'{s}: the last line has no newline: was the file cut short?']
    s.write_text(','.join(HEADER) + f'\na,4,3,/m/0kmg4 0.5 {GOOD}')          # cut at a row boundary
    rep = validate_submission(str(s))
    assert rep.ok and len(rep.warnings) == 1
    p = run_cli('-m', 'util.post.validate', str(s))
    assert p.returncode == 0 and 'warning:' in p.stderr and 'no newline' in p.stderr


def test_scores_and_masks_are_read_as_every_other_step_reads_them(tmp_path):
    """One decoder: what validate accepts is what mask NMS and the metric accept (no lenient base64)."""
    broken = GOOD[:3] + '!' + GOOD[3:]
    write_csv(str(tmp_path / 's.csv'), [('a', 4, 3, [('/m/0kmg4', 0.5, broken)]),
                                        ('b', 4, 3, [('/m/0kmg4', 0.5, GOOD)])])
    rep = validate_submission(str(tmp_path / 's.csv'))
    assert rep.n_problems == 1 and 's.csv:2: image a: detection 1: EncodedMask is not base64' in rep.problems[0]
    p = run_cli('-m', 'util.post.mask_nms', str(tmp_path / 's.csv'), '-o', str(tmp_path / 'o.csv'))
    assert p.returncode == 1 and p.stderr.strip().endswith(rep.problems[0].split('s.csv:')[1])
