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


def _task(pre: float, untrained: float, bag: float, better: bool) -> dict:
    base = "untrained" if untrained >= bag else "bag_of_pages"
    d = pre - max(untrained, bag)
    return {"pretrained": {"value": pre}, "untrained": {"value": untrained}, "bag_of_pages": {"value": bag},
            "vs_best_baseline": {"baseline": base, "difference": d, "ci95": [d - 0.01, d + 0.01],
                                 "pretrained_better": better}}


def test_downstream_table_shows_every_world_and_only_the_tasks_it_has():
    from training.cli import downstream_table

    report = {"worlds": {
        "bank": {"downstream": {"probe_macro_f1": _task(0.95, 0.92, 0.88, True),
                                "ranking_log_loss": _task(0.25, 0.26, 0.27, False)}},
        "mybank": {"downstream": {"conversion_micro_f1": _task(0.80, 0.81, 0.70, False)}}}}
    lines = downstream_table(report).splitlines()
    assert lines[1].strip() == "bank" and lines[4].strip() == "mybank"
    assert "intent probe macro F1" in lines[2] and "0.9500" in lines[2] and "vs untrained: wins" in lines[2]
    assert "tile ranking log loss" in lines[3] and "does not win" in lines[3]
    assert len(lines) == 6 and "conversion micro F1" in lines[5] and "-0.0100" in lines[5]  # no probe without truth/
