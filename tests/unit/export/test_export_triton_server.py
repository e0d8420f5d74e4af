"""TritonServer's checks that need no running server."""

import socket

import pytest

from training.export.triton_server import TritonServer, TritonStartError, free_port, port_is_free


def test_a_taken_port_is_refused_before_starting(tmp_path):
    (tmp_path / "repo").mkdir()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert not port_is_free("127.0.0.1", port)
        server = TritonServer(tmp_path / "repo", grpc_port=port, workdir=tmp_path / "work")
        with pytest.raises(TritonStartError, match=f"gRPC port 127.0.0.1:{port} is already in use"):
            server.start()
        assert server.process is None


def test_missing_repository_says_to_export(tmp_path):
    with pytest.raises(FileNotFoundError, match="make export"):
        TritonServer(tmp_path / "nope", workdir=tmp_path / "work").start()


def test_free_ports_are_distinct_and_urls_use_them(tmp_path):
    server = TritonServer(tmp_path, workdir=tmp_path / "work")
    assert len({server.grpc_port, server.http_port, server.metrics_port}) == 3
    assert server.grpc_url == f"127.0.0.1:{server.grpc_port}"
    assert server.metrics_url.endswith(f":{server.metrics_port}/metrics")
    assert port_is_free("127.0.0.1", free_port())
    assert server.workdir.is_absolute() and server.log_path.is_absolute()
