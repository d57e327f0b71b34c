"""The demo command's guard on its output folder (the full demo is `make demo`)."""

from click.testing import CliRunner

from mfn_tf.commands.demo import demo


def test_nonempty_out_needs_overwrite(tmp_path):
    (tmp_path / "notes.txt").write_text("keep me")
    result = CliRunner().invoke(demo, ["--out", str(tmp_path)])
    assert result.exit_code == 1
    assert "pass --overwrite" in result.output
    assert (tmp_path / "notes.txt").read_text() == "keep me"


def test_overwrite_spares_foreign_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("keep me")
    result = CliRunner().invoke(demo, ["--out", str(tmp_path), "--overwrite"])
    assert result.exit_code == 1
    assert "was not written by the demo" in result.output
    assert (tmp_path / "notes.txt").read_text() == "keep me"
