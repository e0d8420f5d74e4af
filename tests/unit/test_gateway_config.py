"""Gateway settings: defaults < YAML file < GATEWAY_* environment < flags; bad values are named."""

import argparse

import pytest

from gateway.config import GatewayConfig


def test_precedence_file_env_flags(tmp_path):
    (tmp_path / "gw.yaml").write_text("listen: 0.0.0.0:6000\nmax_tiles: 10\ncache_embeddings: false\n")
    env = {"GATEWAY_MAX_TILES": "12", "GATEWAY_TRITON_TIMEOUT_S": "0.5"}
    cfg = GatewayConfig.load(tmp_path / "gw.yaml", env=env, overrides={"triton_timeout_s": 0.1, "store": None})
    assert cfg.listen == "0.0.0.0:6000" and cfg.max_tiles == 12 and cfg.triton_timeout_s == 0.1
    assert cfg.cache_embeddings is False and cfg.store == GatewayConfig().store


def test_unknown_file_keys_and_bad_booleans_are_rejected(tmp_path):
    (tmp_path / "gw.yaml").write_text("listne: 0.0.0.0:6000\n")
    with pytest.raises(ValueError, match="listne"):
        GatewayConfig.load(tmp_path / "gw.yaml", env={})
    with pytest.raises(ValueError, match="not a boolean"):
        GatewayConfig.load(env={"GATEWAY_CACHE_EMBEDDINGS": "maybe"})


def test_every_setting_is_a_flag():
    parser = argparse.ArgumentParser()
    GatewayConfig.add_flags(parser)
    args = vars(parser.parse_args(["--max-tiles", "7", "--cache-embeddings", "no"]))
    cfg = GatewayConfig.load(args.pop("config"), env={}, overrides=args)
    assert cfg.max_tiles == 7 and cfg.cache_embeddings is False
