"""Submission reading: strict rows, physical line numbers, no quoting, duplicates; id lists; text files."""
import gzip

import pytest

from util.common.errors import DataError
from util.common.submission import (
    HEADER,
    SubmissionError,
    iter_lockstep,
    iter_submission,
    parse_confidence,
    read_image_list,
)
from util.common.textio import open_text

HEAD = ','.join(HEADER)


def write(tmp_path, name, lines, raw=None):
    path = tmp_path / name
    path.write_bytes(raw if raw is not None else ('\n'.join(lines) + '\n').encode())
    return str(path)


def test_rows_with_their_physical_lines(tmp_path):
    path = write(tmp_path, 's.csv', [HEAD, 'a,4,3,/m/x 0.5 QUJD /m/y 1 REVG', 'b,2,2,', 'c,1,1,/m/x 0 QQ=='])
    rows = list(iter_submission(path))
    assert [(r.line, r.image_id, r.width, r.height) for r in rows] == [(2, 'a', 4, 3), (3, 'b', 2, 2),
                                                                        (4, 'c', 1, 1)]
    assert rows[0].detections == [('/m/x', 0.5, 'QUJD'), ('/m/y', 1.0, 'REVG')] and rows[1].detections == []
    assert rows[0].text == '/m/x 0.5 QUJD /m/y 1 REVG'


def test_crlf_and_bom_read_the_same(tmp_path):
    lines = [HEAD, 'a,4,3,/m/x 0.5 QUJD', 'b,2,2,']
    plain = write(tmp_path, 'p.csv', lines)
    excel = write(tmp_path, 'e.csv', None, b'\xef\xbb\xbf' + '\r\n'.join(lines).encode() + b'\r\n')
    assert [(r.line, r.image_id, r.text) for r in iter_submission(plain)] == \
        [(r.line, r.image_id, r.text) for r in iter_submission(excel)]


@pytest.mark.parametrize('row,message', [
    ('b,4,3,/m/x nan QUJD', r"s\.csv:3: image b: detection 1: confidence 'nan' is not a number in \[0, 1\]"),
    ('b,4,3,/m/x inf QUJD', "confidence 'inf'"),
    ('b,4,3,/m/x -0.1 QUJD', "confidence '-0.1'"),
    ('b,4,3,/m/x 0.5 QUJD /m/x 1.01 QUJD', r"s\.csv:3: image b: detection 2: confidence '1.01'"),
    ('b,4,3,/m/x 0_5 QUJD', "confidence '0_5'"),
    ('b,0,3,', r"s\.csv:3: image b: width/height '0'/'3' are not positive integers"),
    ('b,4,-3,', "width/height '4'/'-3'"),
    ('b,4,+3,', "width/height '4'/'\\+3'"),
    ('b,4,3', r's\.csv:3: 3 columns, expected 4'),
    (',4,3,', r's\.csv:3: empty ImageID'),
    ('b,4,3,/m/x 0.5', 'PredictionString has 2 fields'),
    ('"b,4,3,', r's\.csv:3: a double quote at column 1: the submission format has no quoting'),
    ('a,4,3,', r's\.csv:3: image a appears twice \(first on line 2\)'),
])
def test_bad_rows_name_file_line_and_image(tmp_path, row, message):
    path = write(tmp_path, 's.csv', [HEAD, 'a,4,3,', row, 'c,4,3,'])
    with pytest.raises(SubmissionError, match=message):
        list(iter_submission(path))


def test_an_unbalanced_quote_does_not_swallow_rows(tmp_path):
    """A CSV parser would read lines 3-5 as one field; the format has no quoting, so line 3 is the error."""
    path = write(tmp_path, 's.csv', [HEAD, 'a,4,3,', 'b,4,3,"/m/x 0.5 QUJD', 'c,4,3,', 'd,4,3,"'])
    with pytest.raises(SubmissionError, match=r's\.csv:3: a double quote at column 7'):
        list(iter_submission(path))


def test_parse_false_still_checks_sizes_and_duplicates(tmp_path):
    path = write(tmp_path, 's.csv', [HEAD, 'a,4,3,anything at all', 'a,4,3,'])
    with pytest.raises(SubmissionError, match=':3: image a appears twice'):
        list(iter_submission(path, parse=False))


def test_lockstep_stops_on_a_duplicate_in_either_input(tmp_path):
    a = write(tmp_path, 'a.csv', [HEAD, 'x,4,3,', 'y,4,3,'])
    b = write(tmp_path, 'b.csv', [HEAD, 'x,4,3,', 'x,4,3,'])
    with pytest.raises(SubmissionError, match=r'b\.csv:3: image x appears twice'):
        list(iter_lockstep([a, b]))


def test_header_is_checked(tmp_path):
    with pytest.raises(SubmissionError, match=r's\.csv:1: header'):
        list(iter_submission(write(tmp_path, 's.csv', ['ImageId,Width,Height,PredictionString'])))
    with pytest.raises(SubmissionError, match=r'e\.csv:1: header None'):
        list(iter_submission(write(tmp_path, 'e.csv', None, b'')))


@pytest.mark.parametrize('text,value', [('0', 0.0), ('1', 1.0), ('0.25', 0.25), ('1e-3', 0.001), ('1.0', 1.0)])
def test_confidences_in_range(text, value):
    assert parse_confidence(text, 'w') == value


def test_image_lists_plain_sized_and_with_bom(tmp_path):
    plain = write(tmp_path, 'ids.txt', None, '\ufeffa\nb\n\nc\n'.encode())
    assert list(read_image_list(plain)) == [('a', None, None), ('b', None, None), ('c', None, None)]
    excel = '\ufeffImageID,ImageWidth,ImageHeight\r\na,4,3\r\nb,2,2\r\n'
    sized = write(tmp_path, 'sample.csv', None, excel.encode())
    assert list(read_image_list(sized)) == [('a', 4, 3), ('b', 2, 2)]
    bad = write(tmp_path, 'bad.csv', ['ImageID,ImageWidth,ImageHeight', 'a,4,3', 'b,0,2'])
    with pytest.raises(SubmissionError, match=r"bad\.csv:3: image b: width/height '0'/'2' are not positive"):
        list(read_image_list(bad))


def test_text_files_gzip_latin1_and_a_cut_character(tmp_path):
    gz = write(tmp_path, 'g.csv', None, gzip.compress(b'ImageID\na\n'))
    with pytest.raises(DataError, match=r'^.*g\.csv: not UTF-8 text \(gzip data\): is it compressed\?$'):
        open_text(gz)
    latin = write(tmp_path, 'l.csv', None, b'a\nb\n' * 5000 + b'caf\xe9\n')     # past the first decoded chunk
    with pytest.raises(DataError, match=r'l\.csv:10001: not UTF-8 text \(byte 20003 is 0xe9\)'):
        list(open_text(latin))
    with pytest.raises(DataError, match=r'l\.csv:10001: not UTF-8'):
        open_text(latin).read()
    cut = write(tmp_path, 'c.csv', None, 'a\nb\u00e9'.encode()[:-1])
    with pytest.raises(DataError, match=r'c\.csv:2: not UTF-8 text \(the file ends inside a character\)'):
        list(open_text(cut))
    for reader in (iter_submission, read_image_list):
        with pytest.raises(DataError, match='is it compressed'):
            list(reader(gz))


def test_writer_gives_csv_writers_bytes_and_refuses_what_needs_quoting(tmp_path):
    import csv

    from util.common.submission import SubmissionWriter
    rows = [('a1', 4, 3, '/m/01 0.5 eJwzBAAAMgAz'), ('b2', 10, 20, ''), ('c3', 1, 1, '/m/02 1 x /m/03 0 y')]
    with SubmissionWriter(str(tmp_path / 'ours.csv')) as w:
        for r in rows:
            w.write_raw(*r)
    with open(tmp_path / 'csv.csv', 'w', newline='') as f:
        writer = csv.writer(f, lineterminator='\n')
        writer.writerow(HEADER)
        writer.writerows(rows)
    assert (tmp_path / 'ours.csv').read_bytes() == (tmp_path / 'csv.csv').read_bytes()
    for bad in ('/m/01 0.5 a,b', '/m/01 0.5 "x"', '/m/01 0.5 x\n'):
        with pytest.raises(SubmissionError, match='no quoting'):
            with SubmissionWriter(str(tmp_path / 'bad.csv')) as w:
                w.write_raw('a1', 4, 3, bad)
        assert not (tmp_path / 'bad.csv').exists()
