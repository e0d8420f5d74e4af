"""`python -m training.export`: help, environment overrides, clear errors for missing inputs."""

import pytest

from training.export.cli import COMMANDS, build_parser, main


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([command, "--help"])
    assert exit_info.value.code == 0
    assert "(default:" in capsys.readouterr().out


def test_public_modules_import():
    import importlib

    import training.export

    for name in training.export.__all__:
        importlib.import_module(f"training.export.{name}")


def test_gpu_target_without_tensorrt_is_a_clean_error(small_artifacts, tmp_path, caplog):
    from training.export.tensorrt_build import gpu_unavailable_reason

    if gpu_unavailable_reason() is None:
        pytest.skip("TensorRT and a GPU are present: the gpu target would build")
    code = main(["export", "--artifacts", str(small_artifacts), "--head", str(small_artifacts / "intent_head.json"),
                 "--repository", str(tmp_path / "repo"), "--target", "gpu"])
    assert code == 1
    assert "needs TensorRT and a GPU" in caplog.text
    assert not (tmp_path / "repo").exists()


def test_env_overrides_defaults(monkeypatch):
    monkeypatch.setenv("INTENT_TARGET", "gpu")
    monkeypatch.setenv("INTENT_LENGTH_BUCKETS", "16,64")
    args = build_parser().parse_args(["export"])
    assert args.target == "gpu" and args.length_buckets == (16, 64)


def test_export_without_a_head_says_how_to_make_one(small_artifacts, tmp_path, caplog):
    code = main(["export", "--artifacts", str(small_artifacts), "--head", str(tmp_path / "none.json"),
                 "--repository", str(tmp_path / "repo")])
    assert code == 2
    assert "make taxonomy" in caplog.text
    assert not (tmp_path / "repo").exists()


def test_serve_without_an_exported_repository_exits_2(tmp_path, caplog):
    assert main(["serve-triton", "--repository", str(tmp_path / "nothing")]) == 2
    assert "make export" in caplog.text


def test_bad_list_flag_is_a_usage_error():
    with pytest.raises(SystemExit):
        build_parser().parse_args(["bench-triton", "--concurrency", "1,two"])
