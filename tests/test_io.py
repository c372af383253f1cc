import errno
from pathlib import Path

import pytest

from seqlab.errors import exit_on_error
from seqlab.io import atomic_path, dvc_md5, write_json


def test_atomic_path_replaces_only_on_success(tmp_path):
    target = tmp_path / "out"
    with atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "a.txt").write_text("first")
    assert (target / "a.txt").read_text() == "first"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.mkdir()
            (tmp / "a.txt").write_text("half")
            raise RuntimeError("stage failed")
    assert (target / "a.txt").read_text() == "first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_write_json_is_sorted_and_ends_with_newline(tmp_path):
    write_json(tmp_path / "m.json", {"b": 1, "a": 0.5})
    assert (tmp_path / "m.json").read_text() == '{\n  "a": 0.5,\n  "b": 1\n}\n'


def test_dvc_md5_of_files_and_directories(tmp_path):
    (tmp_path / "d" / "sub").mkdir(parents=True)
    (tmp_path / "d" / "b.txt").write_text("x")
    (tmp_path / "d" / "sub" / "a.txt").write_text("")
    assert dvc_md5(tmp_path / "d" / "b.txt") == "9dd4e461268c8034f5c8564e155c67a6"
    # DVC's own value for this tree (checked against dvc.lock by the pipeline test, too)
    assert dvc_md5(tmp_path / "d").endswith(".dir")


def test_a_full_disk_is_one_line_naming_the_output_and_leaves_nothing(tmp_path, monkeypatch, capsys):
    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")  # as write() raises it: no file name

    monkeypatch.setattr(Path, "write_text", full)
    (tmp_path / "metrics.json").write_bytes(b"{}\n")  # the previous output

    @exit_on_error
    def stage():
        write_json(tmp_path / "metrics.json", {"ppl": 1.0})

    with pytest.raises(SystemExit) as status:
        stage()
    assert status.value.code == 1
    assert capsys.readouterr().err == f"error: {tmp_path / 'metrics.json'}: No space left on device\n"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"] and (tmp_path / "metrics.json").read_bytes() == b"{}\n"


def test_line_blocks_give_the_lines_read_lines_gives_whatever_the_block(tmp_path):
    from seqlab.io import read_line_blocks, read_lines

    path = tmp_path / "tokens.txt"
    path.write_bytes("\ufeffa b\r\n\nc d e\nf\u2028g\nlast line without end".encode("utf-8"))
    for block_bytes in (1, 2, 5, 7, 1 << 20):
        blocks = list(read_line_blocks(path, block_bytes))
        assert [line for block in blocks for line in block] == read_lines(path)
        assert all(blocks)


@pytest.mark.parametrize("data, message", [
    (b"a b\nc d\n\xff e\n", r"not UTF-8 text \(invalid byte at offset 8\)"),
    (b"a b\nc d\ne \x00\n", r"binary file \(NUL byte at offset 10\)"),
])
def test_line_blocks_refuse_what_read_text_refuses_at_the_file_offset(tmp_path, data, message):
    from seqlab.errors import SeqLabError
    from seqlab.io import read_line_blocks, read_text

    path = tmp_path / "tokens.txt"
    path.write_bytes(data)
    for read in (lambda: read_text(path), lambda: list(read_line_blocks(path, 4))):
        with pytest.raises(SeqLabError, match=rf"^{path}: {message}"):
            read()


def test_line_ranges_cut_a_file_into_shards_of_whole_lines(tmp_path):
    from seqlab.io import line_ranges, read_line_blocks

    path = tmp_path / "tokens.txt"
    lines = [" ".join(["w"] * (i % 7)) for i in range(200)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    for part_bytes in (1, 10, 64, 10_000):
        ranges = line_ranges(path, part_bytes)
        assert ranges[0][0] == 0 and ranges[-1][1] == path.stat().st_size
        assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
        shards = [line for start, stop in ranges for block in read_line_blocks(path, 16, start, stop) for line in block]
        assert shards == lines
    assert len(line_ranges(path, 10_000)) == 1 and len(line_ranges(path, 1)) == 200
