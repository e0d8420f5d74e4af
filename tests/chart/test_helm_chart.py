"""The Helm chart, through the real Helm v4 engine in-process (helm-python-sdk; no helm binary, no cluster).

Strict lint; render of every variant in deploy/helm/chart_check.py (deployments vs KServe, in-chart vs external
Redis, object store vs PVC model repository, tracing on/off); every manifest validated offline against Kubernetes
KUBE_VERSION with kubernetes-validate (strict), custom resources against tests/chart/schemas; then the facts a
platform engineer relies on.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.config import GatewayConfig

helm = pytest.importorskip("helm_python", reason="helm-python-sdk is not installed (pip install -e '.[dev]')")
pytest.importorskip("kubernetes_validate", reason="kubernetes-validate is not installed (pip install -e '.[dev]')")

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("chart_check", ROOT / "deploy" / "helm" / "chart_check.py")
cc = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cc)


def objects(values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    return cc.manifests(cc.render(values))


def one(docs: list[dict[str, Any]], kind: str, component: str | None = None) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind
             and (component is None or d["metadata"]["labels"].get("app.kubernetes.io/component") == component)]
    assert len(found) == 1, f"{len(found)} {kind}/{component} in {[(d['kind'], d['metadata']['name']) for d in docs]}"
    return found[0]


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    return deployment["spec"]["template"]["spec"]["containers"][0]


def env(c: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in c.get("env", [])}


@pytest.fixture(scope="module")
def default() -> list[dict[str, Any]]:
    return objects()


# -- lint, render, validate -----------------------------------------------------------------------------------

def test_lint_strict_passes() -> None:
    report = cc.lint()
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert not problems and not report["errors"], (problems, report["errors"])


def test_every_value_is_documented_and_in_the_schema() -> None:
    chart = cc.CHART
    text = (chart / "values.yaml").read_text()
    documented = set(re.findall(r"## @param (\S+) ", text))
    schema = helm.Chart.load(chart).schema

    def leaves(node: Any, path: str = "") -> list[str]:
        if isinstance(node, dict) and node and not path.endswith(("resources", "securityContext", "SecurityContext",
                                                                   "nodeSelector", "NamespaceSelector")):
            return [p for k, v in node.items() for p in leaves(v, f"{path}.{k}" if path else k)]
        return [path]

    values = yaml.safe_load(text)
    missing = [p for p in leaves(values) if p not in documented]
    assert not missing, f"values without a ## @param comment: {missing}"
    assert schema["additionalProperties"] is False
    assert set(schema["properties"]) == set(values)


@pytest.mark.parametrize("variant", list(cc.VARIANTS))
def test_variant_renders_and_validates(variant: str) -> None:
    docs = objects(cc.VARIANTS[variant])
    assert docs
    for doc in docs:
        cc.validate(doc)  # raises with the offending field


def test_validation_catches_a_bad_manifest(default: list[dict[str, Any]]) -> None:
    bad = copy.deepcopy(one(default, "Deployment", "gateway"))
    bad["spec"]["template"]["spec"]["containers"][0]["imagePullPolcy"] = "Always"
    with pytest.raises(Exception, match="imagePullPolcy"):
        cc.validate(bad)
    isvc = copy.deepcopy(one(objects({"mode": "kserve"}), "InferenceService"))
    isvc["spec"]["predictor"]["triton"]["storageURI"] = isvc["spec"]["predictor"]["triton"].pop("storageUri")
    with pytest.raises(ValueError, match="storageU"):
        cc.validate(isvc)


@pytest.mark.parametrize("values, where", [
    ({"gateway": {"replicas": 3}}, "replicas"),
    ({"triton": {"gpu": {"cout": 1}}}, "cout"),
    ({"modee": "kserve"}, "modee"),
    ({"mode": "knative"}, "mode"),
    ({"redis": {"enabled": "yes"}}, "enabled"),
    ({"triton": {"modelRepository": {"uri": "ftp://models"}}}, "uri"),
])
def test_schema_rejects_typos_and_bad_values(values: dict[str, Any], where: str) -> None:
    with pytest.raises(helm.HelmError, match=where):
        cc.render(values)


@pytest.mark.parametrize("values, message", [
    ({"triton": {"modelRepository": {"uri": "", "existingClaim": ""}}}, "modelRepository"),
    ({"redis": {"enabled": False}}, "Redis"),
    ({"gateway": {"artifacts": {"existingConfigMap": ""}}}, "artifacts"),
])
def test_incomplete_values_fail_with_a_message(values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm.HelmError, match=message):
        cc.render(values)


# -- what the manifests say -------------------------------------------------------------------------------------

def test_triton_on_gpu_nodes_with_health_probes(default: list[dict[str, Any]]) -> None:
    dep = one(default, "Deployment", "triton")
    pod = dep["spec"]["template"]["spec"]
    c = container(dep)
    assert c["image"] == "nvcr.io/nvidia/tritonserver:24.10-py3"
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
    assert c["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert c["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert c["startupProbe"]["httpGet"]["path"] == "/v2/health/ready"
    args = c["args"]
    assert "--model-repository=s3://intent-models/model_repository" in args
    assert {"--grpc-port=8001", "--http-port=8000", "--metrics-port=8002"} <= set(args)
    assert not any(a.startswith("--trace-config") for a in args)
    assert {p["containerPort"] for p in c["ports"]} == {8000, 8001, 8002}
    assert any(v.get("emptyDir", {}).get("medium") == "Memory" for v in pod["volumes"])


def test_gpu_count_and_cpu_only() -> None:
    two = container(one(objects({"triton": {"gpu": {"count": 2}}}), "Deployment", "triton"))
    assert two["resources"]["limits"]["nvidia.com/gpu"] == 2 == two["resources"]["requests"]["nvidia.com/gpu"]
    cpu = container(one(objects(cc.VARIANTS["cpu-single"]), "Deployment", "triton"))
    assert "nvidia.com/gpu" not in cpu["resources"].get("limits", {})
    assert "--allow-gpu-metrics=false" in cpu["args"]


def test_model_repository_from_pvc() -> None:
    dep = one(objects(cc.VARIANTS["pvc-repository"]), "Deployment", "triton")
    c = container(dep)
    assert "--model-repository=/models" in c["args"]
    mount = next(m for m in c["volumeMounts"] if m["name"] == "model-repository")
    assert mount == {"name": "model-repository", "mountPath": "/models", "subPath": "model_repository",
                     "readOnly": True}
    vol = next(v for v in dep["spec"]["template"]["spec"]["volumes"] if v["name"] == "model-repository")
    assert vol["persistentVolumeClaim"]["claimName"] == "intent-models"


def test_gateway_grpc_probes_and_env(default: list[dict[str, Any]]) -> None:
    dep = one(default, "Deployment", "gateway")
    c = container(dep)
    assert c["command"] == ["python", "-m", "gateway.server"]
    assert c["image"] == "intent-gateway:0.1.0"
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):  # the plaintext health-only port
        assert c[probe]["grpc"] == {"port": 50052}
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"grpc": 50051, "health": 50052, "metrics": 9464}
    e = env(c)
    assert e["GATEWAY_LISTEN"] == "0.0.0.0:50051"
    assert e["GATEWAY_HEALTH_LISTEN"] == "0.0.0.0:50052"
    assert e["GATEWAY_MANIFEST"] == "/etc/intent/artifacts/manifest.json"
    assert e["GATEWAY_STORE"] == "redis://intent-intent-platform-redis:6379/0"
    assert e["GATEWAY_TRITON_URL"] == "intent-intent-platform-triton:8001"
    assert e["GATEWAY_ARTIFACTS"] == "/etc/intent/artifacts"
    assert e["GATEWAY_MANIFEST"] == "/etc/intent/artifacts/manifest.json"  # the gateway refuses to start without it
    assert e["GATEWAY_TRITON_TIMEOUT_S"] == "0.25"
    assert (e["GATEWAY_CACHE_EMBEDDINGS"], e["GATEWAY_EMBED_ON_WRITE"]) == ("true", "true")
    # every GATEWAY_* the chart sets is a gateway setting, and the gateway loads them all
    settings = {k: v for k, v in e.items() if k.startswith("GATEWAY_") and isinstance(v, str)}
    cfg = GatewayConfig.load(env=settings)
    assert cfg.embed_on_write and cfg.embed_delay_ms == 20.0 and cfg.max_sessions == 20
    assert {k.removeprefix("GATEWAY_").lower() for k in e if k.startswith("GATEWAY_")} <= {
        f.name for f in dataclasses.fields(GatewayConfig)}
    assert e["OTEL_TRACES_EXPORTER"] == "none"
    assert e["OTEL_EXPORTER_PROMETHEUS_PORT"] == "9464"
    assert "checksum/config" in dep["spec"]["template"]["metadata"]["annotations"]
    assert "replicas" not in dep["spec"]  # the HPA owns it
    vol = next(v for v in dep["spec"]["template"]["spec"]["volumes"] if v["name"] == "artifacts")
    assert vol["configMap"]["name"] == "intent-artifacts"


def test_values_change_what_they_should() -> None:
    docs = objects({"gateway": {"image": {"registry": "r.example", "repository": "ml/gw", "tag": "2.0"},
                                "autoscaling": {"enabled": False}, "replicaCount": 4,
                                "config": {"tritonTimeoutS": 0.5, "maxBatchEvents": 50, "retentionDays": 30}},
                    "triton": {"image": {"tag": "24.12-py3"}}})
    gw = one(docs, "Deployment", "gateway")
    assert gw["spec"]["replicas"] == 4
    assert container(gw)["image"] == "r.example/ml/gw:2.0"
    e = env(container(gw))
    assert (e["GATEWAY_TRITON_TIMEOUT_S"], e["GATEWAY_MAX_BATCH_EVENTS"], e["GATEWAY_RETENTION_DAYS"]) == \
        ("0.5", "50", "30")
    assert container(one(docs, "Deployment", "triton"))["image"].endswith(":24.12-py3")
    assert not [d for d in docs if d["kind"] == "HorizontalPodAutoscaler"]
    checksum = gw["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
    other = one(objects({"gateway": {"config": {"tritonTimeoutS": 0.3}}}), "Deployment", "gateway")
    assert other["spec"]["template"]["metadata"]["annotations"]["checksum/config"] != checksum


def test_hpa_pdb_serviceaccount(default: list[dict[str, Any]]) -> None:
    hpa = one(default, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "intent-intent-platform-gateway"
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 10)
    assert hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"] == 70
    assert one(default, "PodDisruptionBudget", "gateway")["spec"]["minAvailable"] == 1
    assert one(default, "PodDisruptionBudget", "triton")["spec"]["maxUnavailable"] == 1
    sa = one(default, "ServiceAccount")
    for dep in (d for d in default if d["kind"] in ("Deployment", "StatefulSet")):
        assert dep["spec"]["template"]["spec"]["serviceAccountName"] == sa["metadata"]["name"]


def test_network_policies(default: list[dict[str, Any]]) -> None:
    gw = one(default, "NetworkPolicy", "gateway")["spec"]
    assert gw["policyTypes"] == ["Ingress", "Egress"]
    grpc_rule = next(r for r in gw["ingress"] if r["ports"][0]["port"] == 50051)
    assert [p["port"] for p in grpc_rule["ports"]] == [50051, 50052]  # the typed service and its health port
    assert grpc_rule["from"] == [{"podSelector": {"matchLabels": {"intent-intent-platform-client": "true"}}}]
    egress_ports = {p["port"] for r in gw["egress"] for p in r["ports"]}
    assert egress_ports == {8001, 6379, 53}
    triton = one(default, "NetworkPolicy", "triton")["spec"]
    inference = triton["ingress"][0]
    assert inference["from"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "gateway"
    redis = one(default, "NetworkPolicy", "redis")["spec"]
    assert redis["ingress"][0]["from"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "gateway"
    prod = objects(cc.VARIANTS["production"])
    gw = one(prod, "NetworkPolicy", "gateway")["spec"]
    assert gw["ingress"][0]["from"] == [{"namespaceSelector": {"matchLabels": {"team": "mobile-app"}}}]
    assert 4318 in {p["port"] for r in gw["egress"] for p in r["ports"]}  # the OTLP collector


def test_helm_test_hook_checks_grpc_health(default: list[dict[str, Any]]) -> None:
    pod = one(default, "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert pod["metadata"]["labels"]["intent-intent-platform-client"] == "true"  # let in by the NetworkPolicy
    c = pod["spec"]["containers"][0]
    assert "grpc_health.v1" in c["command"][2]
    assert c["command"][-1] == "intent-intent-platform-gateway:50052"  # health only, plaintext
    assert "insecure_channel" in c["command"][2]
    assert pod["spec"]["restartPolicy"] == "Never"
    svc = one(default, "Service", "gateway")
    assert ("health", 50052) in [(p["name"], p["port"]) for p in svc["spec"]["ports"]]


def test_redis_in_chart_and_external() -> None:
    sts = one(objects(), "StatefulSet")
    assert "--appendonly" in container(sts)["args"]
    assert sts["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] == "2Gi"
    docs = objects(cc.VARIANTS["external-redis-url"])
    assert not [d for d in docs if d["kind"] == "StatefulSet"]
    secret = one(docs, "Secret")
    assert secret["stringData"]["url"] == "redis://:s3cret@redis.data:6379/2"
    store = env(container(one(docs, "Deployment", "gateway")))["GATEWAY_STORE"]
    assert store == {"secretKeyRef": {"name": secret["metadata"]["name"], "key": "url"}}
    prod = env(container(one(objects(cc.VARIANTS["production"]), "Deployment", "gateway")))
    assert prod["GATEWAY_STORE"] == {"secretKeyRef": {"name": "intent-redis", "key": "url"}}


def test_tracing_wires_gateway_env_and_triton_flags() -> None:
    docs = objects(cc.VARIANTS["tracing"])
    e = env(container(one(docs, "Deployment", "gateway")))
    assert e["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://collector.obs:4318"
    assert e["OTEL_SERVICE_NAME"] == "intent-intent-platform-gateway"
    assert e["OTEL_TRACES_SAMPLER"] == "parentbased_traceidratio"
    args = container(one(docs, "Deployment", "triton"))["args"]
    assert "--trace-config=mode=opentelemetry" in args
    assert "--trace-config=opentelemetry,url=http://collector.obs:4318/v1/traces" in args
    assert "--trace-config=rate=0" in args  # Triton traces what the gateway sampled, nothing else
    # with tracing on, sampled requests reach Triton over HTTP (every traceparent kept), the others over gRPC
    assert e["GATEWAY_TRITON_URL"] == "intent-intent-platform-triton:8001"
    assert e["GATEWAY_TRITON_TRACE_URL"] == "http://intent-intent-platform-triton:8000"
    gw = one(docs, "NetworkPolicy", "gateway")["spec"]
    assert {p["port"] for r in gw["egress"] for p in r["ports"]} >= {8000, 8001}
    untraced = one(objects(), "NetworkPolicy", "gateway")["spec"]
    assert 8000 not in {p["port"] for r in untraced["egress"] for p in r["ports"]}
    assert env(container(one(objects(), "Deployment", "gateway")))["GATEWAY_TRITON_TRACE_URL"] == ""


def test_inline_artifacts_configmap() -> None:
    docs = objects(cc.VARIANTS["inline-artifacts"])
    cm = one(docs, "ConfigMap")
    assert set(cm["data"]) == {"featurizer.json", "ranker.json", "manifest.json"}
    vol = next(v for v in one(docs, "Deployment", "gateway")["spec"]["template"]["spec"]["volumes"]
               if v["name"] == "artifacts")
    assert vol["configMap"]["name"] == cm["metadata"]["name"]


def test_kserve_variant() -> None:
    docs = objects({"mode": "kserve"})
    assert not [d for d in docs if d["kind"] in ("Deployment", "HorizontalPodAutoscaler", "PodDisruptionBudget")]
    isvc = one(docs, "InferenceService")
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "RawDeployment"
    triton = isvc["spec"]["predictor"]["triton"]
    assert triton["storageUri"] == "s3://intent-models/model_repository"
    assert (triton["runtimeVersion"], triton["protocolVersion"]) == ("24.10-py3", "v2")
    assert triton["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert isvc["spec"]["predictor"]["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    c = isvc["spec"]["transformer"]["containers"][0]
    assert c["command"] == ["python", "-m", "gateway.kserve_transformer"]
    assert c["args"] == ["--predictor_host", "intent-intent-platform-predictor.serving:80",
                         "--predictor_protocol", "grpc-v2", "--http_port", "8080", "--grpc_port", "8081",
                         "--allow_events", "true", "--enable_gateway_grpc", "true"]
    assert c["ports"] == [{"name": "h2c", "containerPort": 8081, "protocol": "TCP"}]  # Knative routes one port
    e = env(c)
    assert e["GATEWAY_TRITON_URL"] == "intent-intent-platform-predictor.serving:80"
    # the same store as in Deployment mode, and the typed service on gateway.port
    assert e["GATEWAY_STORE"] == "redis://intent-intent-platform-redis:6379/0"
    assert e["GATEWAY_LISTEN"] == "0.0.0.0:50051"
    assert e["GATEWAY_MANIFEST"] == "/etc/intent/artifacts/manifest.json"
    redis_np = one(docs, "NetworkPolicy", "redis")["spec"]
    assert redis_np["ingress"][0]["from"][0]["podSelector"]["matchLabels"] == {
        "serving.kserve.io/inferenceservice": "intent-intent-platform", "component": "transformer"}
    no_events = one(objects({"mode": "kserve", "kserve": {"transformer": {"allowEvents": False}}}),
                    "InferenceService")["spec"]["transformer"]["containers"][0]["args"]
    assert no_events[no_events.index("--allow_events") + 1] == "false"
    pvc = one(objects(cc.VARIANTS["kserve-pvc-tracing"]), "InferenceService")["spec"]["predictor"]["triton"]
    assert pvc["storageUri"] == "pvc://intent-models"
    assert "--trace-config=mode=opentelemetry" in pvc["args"]


def test_kserve_mode_exposes_the_typed_service_on_the_transformer_pods() -> None:
    """mode kserve: the gateway Service (same name and port as in Deployment mode) selects KServe's transformer
    pods on gateway.port; a NetworkPolicy lets only allowed clients reach that port (and Prometheus the metrics)
    and leaves every other port open for KServe/Knative; `helm test` checks the typed service's health."""
    transformer = {"serving.kserve.io/inferenceservice": "intent-intent-platform", "component": "transformer"}
    docs = objects({"mode": "kserve"})
    svc = one(docs, "Service", "gateway")
    assert svc["metadata"]["name"] == "intent-intent-platform-gateway" and svc["spec"]["selector"] == transformer
    assert [(p["name"], p["port"], p["targetPort"]) for p in svc["spec"]["ports"]] == [
        ("grpc", 50051, 50051), ("health", 50052, 50052), ("metrics", 9464, 9464)]
    assert svc["spec"]["ports"][0]["appProtocol"] == "grpc"
    policy = one(docs, "NetworkPolicy", "gateway")["spec"]
    assert policy["podSelector"]["matchLabels"] == transformer and policy["policyTypes"] == ["Ingress"]
    typed, metrics, rest = policy["ingress"]
    assert typed == {"ports": [{"port": 50051, "protocol": "TCP"}],
                     "from": [{"podSelector": {"matchLabels": {"intent-intent-platform-client": "true"}}}]}
    assert metrics["ports"] == [{"port": 9464, "protocol": "TCP"}] and "namespaceSelector" in metrics["from"][0]
    assert "from" not in rest  # from anywhere: every port but those two

    def covered(port: int) -> bool:
        return any(r["port"] <= port <= r.get("endPort", r["port"]) for r in rest["ports"])

    assert all(covered(p) for p in (1, 8080, 8081, 8012, 9463, 9465, 50050, 50052, 65535))
    assert not covered(50051) and not covered(9464)
    assert one(docs, "Pod")["spec"]["containers"][0]["command"][-1] == "intent-intent-platform-gateway:50052"
    prod = objects({**cc.VARIANTS["production"], "mode": "kserve"})
    assert one(prod, "NetworkPolicy", "gateway")["spec"]["ingress"][0]["from"] == [
        {"namespaceSelector": {"matchLabels": {"team": "mobile-app"}}}]
    assert [m["metadata"]["labels"]["app.kubernetes.io/component"] for m in prod if m["kind"] == "ServiceMonitor"] \
        == ["gateway"]
    moved = objects({"mode": "kserve", "gateway": {"port": 6000}, "metrics": {"enabled": False}})
    assert one(moved, "Service", "gateway")["spec"]["ports"] == [
        {"name": "grpc", "port": 50051, "targetPort": 6000, "protocol": "TCP", "appProtocol": "grpc"},
        {"name": "health", "port": 50052, "targetPort": 50052, "protocol": "TCP", "appProtocol": "grpc"}]
    ranges = one(moved, "NetworkPolicy", "gateway")["spec"]["ingress"][-1]["ports"]
    assert ranges == [{"port": 1, "endPort": 5999, "protocol": "TCP"}, {"port": 6001, "endPort": 65535,
                                                                        "protocol": "TCP"}]
    assert not [d for d in objects({"mode": "kserve", "networkPolicy": {"enabled": False}})
                if d["kind"] == "NetworkPolicy"]


@pytest.mark.parametrize("values, message", [
    ({"mode": "kserve", "gateway": {"port": 8081}}, "must differ from kserve.transformer"),
    ({"mode": "kserve", "kserve": {"deploymentMode": "Serverless", "transformer": {"minReplicas": 0}}},
     "minReplicas must be >= 1"),
    ({"metrics": {"port": 50051}}, "metrics.port and gateway.port must differ"),
    ({"gateway": {"healthPort": 50051}}, "healthPort must differ"),
    ({"gateway": {"terminationGracePeriodSeconds": 15}}, "terminationGracePeriodSeconds must exceed"),
    ({"mode": "kserve", "kserve": {"transformer": {"predictorProtocol": "v1"}}}, "predictorProtocol"),
])
def test_kserve_values_that_cannot_work_fail(values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm.HelmError, match=message):
        cc.render(values)


def test_service_monitors_only_when_enabled(default: list[dict[str, Any]]) -> None:
    assert not [d for d in default if d["kind"] == "ServiceMonitor"]
    monitors = [d for d in objects(cc.VARIANTS["production"]) if d["kind"] == "ServiceMonitor"]
    assert {m["metadata"]["labels"]["app.kubernetes.io/component"] for m in monitors} == {"gateway", "triton"}
    assert all(m["metadata"]["labels"]["release"] == "prometheus" for m in monitors)


def test_notes_render(default: list[dict[str, Any]]) -> None:
    notes = cc.render()["intent-platform/templates/NOTES.txt"]
    assert "helm test intent" in notes and "kubectl -n serving create configmap intent-artifacts" in notes


def test_chart_check_cli(tmp_path: Path) -> None:
    assert cc.main(["--out", str(tmp_path)]) == 0
    assert {p.stem for p in tmp_path.glob("*.yaml")} == set(cc.VARIANTS)


# -- who may call, what is kept, how a pod stops ----------------------------------------------------------------

def _mounts(c: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["name"]: m for m in c.get("volumeMounts", [])}


def test_gateway_auth_from_secrets_mounted_read_only(default: list[dict[str, Any]]) -> None:
    """The embedded default's mode (mtls+jwt) with the operator's certificates and token key from Secrets (named
    after the release unless given), the id hash key as env from its Secret; nothing generated in the pod."""
    dep = one(default, "Deployment", "gateway")
    c = container(dep)
    e = env(c)
    assert e["GATEWAY_AUTH"] == "mtls+jwt"
    assert (e["GATEWAY_TLS_CERT"], e["GATEWAY_TLS_KEY"], e["GATEWAY_TLS_CLIENT_CA"]) == (
        "/etc/intent/tls/tls.crt", "/etc/intent/tls/tls.key", "/etc/intent/tls/ca.crt")
    assert e["GATEWAY_JWT_JWKS"] == "/etc/intent/jwt/jwks.json" and "GATEWAY_JWT_PUBLIC_KEY" not in e
    assert (e["GATEWAY_JWT_ISSUER"], e["GATEWAY_JWT_AUDIENCE"]) == ("intent-platform-local", "intent-gateway")
    assert e["GATEWAY_ID_HASH_KEY"] == {"secretKeyRef": {"name": "intent-intent-platform-id-hash-key",
                                                         "key": "id-hash-key"}}
    assert "GATEWAY_ID_HASH_PREVIOUS_KEYS" not in e
    volumes = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
    assert volumes["tls"]["secret"]["secretName"] == "intent-intent-platform-tls"
    assert volumes["jwt"]["secret"]["secretName"] == "intent-intent-platform-jwt"
    mounts = _mounts(c)
    assert mounts["tls"] == {"name": "tls", "mountPath": "/etc/intent/tls", "readOnly": True}
    assert mounts["jwt"]["readOnly"] is True
    cfg = GatewayConfig.load(env={k: v for k, v in e.items() if k.startswith("GATEWAY_") and isinstance(v, str)})
    assert cfg.auth == "mtls+jwt" and cfg.tls_client_ca == "/etc/intent/tls/ca.crt" and cfg.jwt_leeway_s == 30.0


def test_given_secrets_a_pem_key_and_key_rotation() -> None:
    docs = objects(cc.VARIANTS["auth-secrets"])
    dep = one(docs, "Deployment", "gateway")
    e = env(container(dep))
    assert e["GATEWAY_JWT_PUBLIC_KEY"] == "/etc/intent/jwt/public.pem" and "GATEWAY_JWT_JWKS" not in e
    assert e["GATEWAY_JWT_ISSUER"] == "https://idp.bank.example"
    assert e["GATEWAY_ID_HASH_KEY"]["secretKeyRef"] == {"name": "gateway-ids", "key": "id-hash-key"}
    assert e["GATEWAY_ID_HASH_PREVIOUS_KEYS"]["secretKeyRef"] == {"name": "gateway-ids", "key": "previous"}
    volumes = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
    assert (volumes["tls"]["secret"]["secretName"], volumes["jwt"]["secret"]["secretName"]) == (
        "gateway-tls", "idp-signing-key")
    kserve = one(objects({**cc.VARIANTS["auth-secrets"], "mode": "kserve"}), "InferenceService")
    transformer = kserve["spec"]["transformer"]
    assert {"tls", "jwt"} <= set(_mounts(transformer["containers"][0]))
    assert {"tls", "jwt"} <= {v["name"] for v in transformer["volumes"]}
    assert env(transformer["containers"][0])["GATEWAY_AUTH"] == "mtls+jwt"


def test_auth_none_mounts_nothing_and_says_so() -> None:
    dep = one(objects(cc.VARIANTS["auth-none"]), "Deployment", "gateway")
    e = env(container(dep))
    assert e["GATEWAY_AUTH"] == "none"
    assert not [k for k in e if k.startswith(("GATEWAY_TLS_", "GATEWAY_JWT_"))]
    assert not {"tls", "jwt"} & set(_mounts(container(dep)))
    assert "GATEWAY_ID_HASH_KEY" in e  # pseudonyms do not depend on the auth mode


def test_graceful_stop_prestop_drain_and_grace(default: list[dict[str, Any]]) -> None:
    dep = one(default, "Deployment", "gateway")
    c = container(dep)
    assert c["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", "5"]
    e = env(c)
    assert (e["GATEWAY_DRAIN_S"], e["GATEWAY_GRACE_S"]) == ("5", "5")
    assert dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > 2 * 5 + 5
    longer = container(one(objects({"gateway": {"config": {"drainS": 10}}}), "Deployment", "gateway"))
    assert longer["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", "10"]


def test_chart_redis_fsyncs_every_write() -> None:
    args = container(one(objects(), "StatefulSet"))["args"]
    assert args[args.index("--appendonly") + 1] == "yes"
    assert args[args.index("--appendfsync") + 1] == "always"
