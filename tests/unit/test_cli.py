import pytest

from training.cli import COMMANDS, build_parser, main


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([command, "--help"])
    assert exit_info.value.code == 0
    assert "(default:" in capsys.readouterr().out


def test_env_overrides_default(monkeypatch):
    monkeypatch.setenv("INTENT_EPOCHS", "3")
    assert build_parser().parse_args(["train"]).epochs == 3


def test_bad_data_dir_exits_2_with_message(tmp_path, caplog):
    assert main(["train", "--data", str(tmp_path / "nope"), "--artifacts", str(tmp_path / "a")]) == 2
    assert "no events file" in caplog.text or "does not exist" in caplog.text
