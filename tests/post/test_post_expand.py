"""Expansion up the hierarchy, against a walk of the raw hierarchy JSON."""
import os

from _post_reference import (
    BEAR,
    CARNIVORE,
    REPTILE,
    SOME_LEAVES,
    SOME_PARENTS,
    TEDDY,
    TOY,
    TURTLE,
    image_detections,
    read_csv,
    run_cli,
    same_dets,
    slow_expand,
    write_csv,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from util.common.hierarchy import load_default
from util.common.submission import (
    SHORTEST,
    format_prediction_string,
    parse_prediction_string,
)
from util.post.expand import Expander, expand_submission

HIERARCHY = load_default()


@settings(max_examples=25, deadline=None)
@given(images=st.lists(image_detections(SOME_LEAVES + SOME_PARENTS, max_dets=5), max_size=3),
       parents_only=st.booleans(), score_thr=st.sampled_from([None, 0.5]),
       only=st.sampled_from([None, 'parent25', 'parent23']))
def test_matches_slow_expansion(tmp_path_factory, images, parents_only, score_thr, only):
    d = tmp_path_factory.mktemp('exp')
    rows = [(f'i{k}', w, h, dets) for k, (h, w, dets) in enumerate(images)]
    write_csv(str(d / 'in.csv'), rows)
    keep = None if only is None else HIERARCHY.subset(only)
    expand_submission(str(d / 'in.csv'), str(d / 'out.csv'),
                      Expander(HIERARCHY, parents_only, score_thr, keep))
    got = read_csv(str(d / 'out.csv'))
    assert [r[0] for r in got] == [r[0] for r in rows]
    for (image_id, w, h, dets), row in zip(rows, got):
        assert row[1:3] == [str(w), str(h)]
        assert same_dets(row[3], slow_expand(dets, parents_only, score_thr, keep), h, w)


def test_teddy_bear_goes_to_all_three_ancestors():
    e = Expander(HIERARCHY, parents_only=True)
    assert set(e.labels_for(TEDDY)) == {TOY, BEAR, CARNIVORE}
    assert Expander(HIERARCHY).expand([(TEDDY, 0.5, 'M')]) == [(TEDDY, 0.5, 'M')] + [
        (m, 0.5, 'M') for m in HIERARCHY.ancestors_in_order(TEDDY)]
    # The parent model's own expansion: Bear -> Carnivore, Turtle -> Reptile, Toy -> nothing.
    assert Expander(HIERARCHY, parents_only=True).expand([(BEAR, 1, 'a'), (TURTLE, 1, 'b'), (TOY, 1, 'c')]) \
        == [(CARNIVORE, 1, 'a'), (REPTILE, 1, 'b')]


def test_cli_and_unknown_label(tmp_path):
    write_csv(str(tmp_path / 'in.csv'), [('a', 2, 2, [(TEDDY, 0.7, 'eJwzBAAAMgAy')]), ('b', 2, 2, [])])
    p = run_cli('-m', 'util.post.expand', str(tmp_path / 'in.csv'), '-o', str(tmp_path / 'out.csv'),
                '--parents-only', '--only', 'parent23')
    assert p.returncode == 0, p.stderr
    rows = read_csv(str(tmp_path / 'out.csv'))
    assert rows[0][3] == f'{TOY} 0.7 eJwzBAAAMgAy {BEAR} 0.7 eJwzBAAAMgAy' and rows[1] == ['b', '2', '2', '']
    write_csv(str(tmp_path / 'bad.csv'), [('a', 2, 2, []), ('b', 2, 2, [('/m/nope', 0.7, 'eJwzBAAAMgAy')])])
    p = run_cli('-m', 'util.post.expand', str(tmp_path / 'bad.csv'), '-o', str(tmp_path / 'x.csv'))
    assert p.returncode != 0 and 'bad.csv:3: image b: label /m/nope is not in the class hierarchy' in p.stderr
    assert not os.path.exists(tmp_path / 'x.csv')
    p = run_cli('-m', 'util.post.expand', str(tmp_path / 'in.csv'), '-o', str(tmp_path / 'x.csv'),
                '--only', 'nope')
    assert p.returncode != 0 and 'neither a file nor a class subset' in p.stderr


def test_scores_are_written_back_as_read(tmp_path):
    """Steps after results -> CSV keep each confidence's text (more digits than '.6g' survive)."""
    (tmp_path / 'in.csv').write_text('ImageID,ImageWidth,ImageHeight,PredictionString\n'
                                     f'a,2,2,{BEAR} 0.12345678 eJwzBAAAMgAy {BEAR} 1 eJwzBAAAMgAy '
                                     f'{BEAR} 1e-05 eJwzBAAAMgAy\n')
    expand_submission(str(tmp_path / 'in.csv'), str(tmp_path / 'out.csv'), Expander(HIERARCHY))
    assert read_csv(str(tmp_path / 'out.csv'))[0][3].split()[1::3] == \
        ['0.12345678', '0.12345678', '1', '1', '1e-05', '1e-05']


@settings(max_examples=25, deadline=None)
@given(images=st.lists(image_detections(SOME_LEAVES + SOME_PARENTS, max_dets=6), max_size=4),
       parents_only=st.booleans(), score_thr=st.sampled_from([None, 0.5]))
def test_text_copies_are_the_parsed_triples_rewritten(tmp_path_factory, images, parents_only, score_thr):
    """The file step copies confidence and mask texts; the bytes are those of parsing every triple,
    expanding it and writing it back (what the step did before)."""
    d = tmp_path_factory.mktemp('exp')
    write_csv(str(d / 'in.csv'), [(f'i{k}', w, h, dets) for k, (h, w, dets) in enumerate(images)])
    expander = Expander(HIERARCHY, parents_only, score_thr)
    expand_submission(str(d / 'in.csv'), str(d / 'out.csv'), expander)
    want = ['ImageID,ImageWidth,ImageHeight,PredictionString']
    for row in read_csv(str(d / 'in.csv')):
        dets = expander.expand(parse_prediction_string(row[3]))
        want.append(','.join(row[:3] + [format_prediction_string(dets, SHORTEST)]))
    assert (d / 'out.csv').read_text() == '\n'.join(want) + '\n'


def test_bad_confidence_is_refused_naming_line_and_detection(tmp_path):
    (tmp_path / 'in.csv').write_text('ImageID,ImageWidth,ImageHeight,PredictionString\na,2,2,\n'
                                     f'b,2,2,{BEAR} 0.5 eJwzBAAAMgAy {BEAR} inf eJwzBAAAMgAy\n')
    p = run_cli('-m', 'util.post.expand', str(tmp_path / 'in.csv'), '-o', str(tmp_path / 'out.csv'),
                '--no-progress')
    assert p.returncode == 1 and len(p.stderr.strip().splitlines()) == 1
    assert "in.csv:3: image b: detection 2: confidence 'inf'" in p.stderr
    assert not os.path.exists(tmp_path / 'out.csv')
