"""The model repository: every config.pbtxt parses against Triton's own model-config proto and says what we mean."""

import json
from dataclasses import replace
from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from training.export.repository import (
    ENCODER,
    HEAD,
    PIPELINE,
    ModelShapes,
    ServingConfig,
    served_versions,
    write_repository,
)

SHAPES = ModelShapes(n_categorical=9, n_continuous=6, embedding_dim=64, labels=("card_compare", "fraud", "refi"),
                     max_len=64, cardinalities=(75, 26, 11, 6, 12, 102, 102, 102, 102),
                     featurizer_version="1-abc", taxonomy_version="tax-1")
ROOT = Path(__file__).resolve().parents[3]


def parse(path: Path) -> mc.ModelConfig:
    return text_format.Parse(path.read_text(), mc.ModelConfig())


def write(tmp_path: Path, cfg: ServingConfig) -> dict[str, mc.ModelConfig]:
    suffix = "onnx" if cfg.target == "cpu" else "plan"
    files = {}
    for name in (ENCODER, HEAD):
        files[name] = tmp_path / f"{name}.{suffix}"
        files[name].write_bytes(b"model")
    written = write_repository(tmp_path / "repo", SHAPES, cfg, files)
    return {name: parse(path) for name, path in written.items()}


@pytest.mark.parametrize("target", ["cpu", "gpu"])
def test_configs_parse_and_wire_the_ensemble(tmp_path, target):
    configs = write(tmp_path, ServingConfig(target=target, max_batch_size=32, preferred_batch_sizes=(8, 16),
                                            max_queue_delay_us=300))
    enc, head, pipe = configs[ENCODER], configs[HEAD], configs[PIPELINE]
    assert [c.name for c in configs.values()] == [ENCODER, HEAD, PIPELINE]
    assert {c.max_batch_size for c in configs.values()} == {32}
    assert [(i.name, i.data_type, list(i.dims)) for i in pipe.input] == [
        ("CATEGORICAL", mc.TYPE_INT64, [-1, 9]), ("CONTINUOUS", mc.TYPE_FP32, [-1, 6])]
    assert [(o.name, list(o.dims), o.label_filename) for o in pipe.output] == [
        ("EMBEDDING", [64], ""), ("INTENT_PROBS", [3], "labels.txt")]
    assert pipe.platform == "ensemble"
    steps = pipe.ensemble_scheduling.step
    assert [s.model_name for s in steps] == [ENCODER, HEAD]
    assert dict(steps[0].output_map) == {"EMBEDDING": "EMBEDDING", "EMBEDDING_TO_HEAD": "session_embedding"}
    assert dict(steps[1].input_map) == {"EMBEDDING": "session_embedding"}
    # No ensemble output may also feed a step: Triton 2.51 then prunes wrongly when a subset is requested.
    consumed = {t for step in steps for t in step.input_map.values()}
    assert not consumed & {o.name for o in pipe.output}
    assert pipe.version_policy.latest.num_versions == 1  # only the newest ensemble version is served
    assert [s.model_version for s in steps] == [1, 1]  # pinned: never "latest" per step
    assert pipe.parameters["repository_version"].string_value == "1"
    assert pipe.parameters["featurizer_version"].string_value == "1-abc"
    assert pipe.parameters["taxonomy_version"].string_value == "tax-1"
    for model in (enc, head):
        assert list(model.dynamic_batching.preferred_batch_size) == [8, 16]
        assert model.dynamic_batching.max_queue_delay_microseconds == 300
        assert model.version_policy.latest.num_versions == 2  # v-1 stays loaded beside v (hot reload)
        assert model.instance_group[0].kind == (mc.ModelInstanceGroup.KIND_CPU if target == "cpu"
                                                else mc.ModelInstanceGroup.KIND_GPU)
    assert head.output[0].label_filename == "labels.txt"
    repo = tmp_path / "repo"
    assert (repo / HEAD / "labels.txt").read_text().split() == list(SHAPES.labels)
    assert (repo / PIPELINE / "labels.txt").read_text() == (repo / HEAD / "labels.txt").read_text()
    assert (repo / PIPELINE / "1").is_dir()  # Triton wants a version folder even for an ensemble
    if target == "cpu":
        assert enc.backend == "python" and not enc.platform
        assert all(i.allow_ragged_batch for i in enc.input)  # requests of any length share a batch
        assert enc.parameters["max_len"].string_value == "64"
        assert (repo / ENCODER / "1" / "model.onnx").exists() and (repo / ENCODER / "1" / "model.py").exists()
        own = json.loads((repo / ENCODER / "1" / "params.json").read_text())  # this version's, preferred by model.py
        assert own["cardinalities"] == enc.parameters["cardinalities"].string_value and own["max_len"] == "64"
    else:
        assert enc.platform == "tensorrt_plan" and not enc.backend
        assert not any(i.allow_ragged_batch for i in enc.input)
        assert (repo / ENCODER / "1" / "model.plan").exists()


def test_a_second_version_is_written_beside_the_first_with_the_ensemble_pinned_to_it(tmp_path):
    files = {}
    for name in (ENCODER, HEAD):
        files[name] = tmp_path / f"{name}.onnx"
        files[name].write_bytes(b"model")
    repo = tmp_path / "repo"
    write_repository(repo, SHAPES, ServingConfig(), files)
    bigger = replace(SHAPES, cardinalities=(80, *SHAPES.cardinalities[1:]), featurizer_version="1-def")
    written = write_repository(repo, bigger, ServingConfig(), files, version=2, manifest_hash="00ff" * 4)
    pipe = parse(written[PIPELINE])
    assert [s.model_version for s in pipe.ensemble_scheduling.step] == [2, 2]
    assert pipe.parameters["manifest_hash"].string_value == "00ff" * 4
    assert pipe.parameters["repository_version"].string_value == "2"
    assert (repo / PIPELINE / "1").is_dir() and (repo / PIPELINE / "2").is_dir()
    assert served_versions(repo, ENCODER) == [1, 2] == served_versions(repo, HEAD)
    # the config is shared by both versions; each keeps its own vocabulary sizes
    assert json.loads(json.loads((repo / ENCODER / "1" / "params.json").read_text())["cardinalities"])[0] == 75
    assert json.loads(json.loads((repo / ENCODER / "2" / "params.json").read_text())["cardinalities"])[0] == 80


def test_no_batching_variant_has_no_dynamic_batcher(tmp_path):
    configs = write(tmp_path, ServingConfig(dynamic_batching=False))
    assert not configs[ENCODER].HasField("dynamic_batching")
    assert not configs[HEAD].HasField("dynamic_batching")


def test_switching_target_removes_the_other_model_file(tmp_path):
    write(tmp_path, ServingConfig(target="gpu"))
    write(tmp_path, ServingConfig(target="cpu"))
    version = tmp_path / "repo" / ENCODER / "1"
    assert (version / "model.onnx").exists() and not (version / "model.plan").exists()


def test_the_projects_model_repository_parses():
    """Whatever `make export` wrote into the tracked model_repository/ is a valid Triton config."""
    paths = sorted((ROOT / "model_repository").glob("*/config.pbtxt"))
    if not paths:
        pytest.skip("model_repository/ has no configs yet (run `make export`)")
    for path in paths:
        assert parse(path).name == path.parent.name


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"target": "tpu"}, "target must be one of"),
    ({"max_batch_size": 0}, "max_batch_size must be >= 1"),
    ({"preferred_batch_sizes": (8, 128)}, r"\[128\] outside"),
    ({"ort_threads": 0}, "must be >= 1"),
])
def test_bad_serving_config_is_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ServingConfig(**kwargs)
