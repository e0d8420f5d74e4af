"""Lint, render and validate the intent-platform chart offline, with the real Helm v4 engine (helm-python-sdk).

No helm binary and no cluster: `helm_python` runs Helm's Go engine in-process, and every rendered manifest is
validated with kubernetes-validate (strict: unknown fields fail) against the bundled schemas of KUBE_VERSION.
Custom resources (KServe's InferenceService, the Prometheus Operator's ServiceMonitor) are validated against the
hand-written schemas in tests/chart/schemas, which reference the bundled Kubernetes definitions.

    python deploy/helm/chart_check.py --out reports/chart        # every variant -> reports/chart/<variant>.yaml
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "intent-platform"
CRD_SCHEMAS = ROOT / "tests" / "chart" / "schemas"
KUBE_VERSION = "1.33.0"
"""Kubernetes version the manifests are validated against (the chart's kubeVersion allows >=1.27)."""
RELEASE = "intent"
NAMESPACE = "serving"

ARTIFACT_FILES = {"featurizer.json": '{"version": 1}', "ranker.json": '{"version": 1}',
                  "manifest.json": '{"format": "intent-manifest/1"}'}

VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "production": {
        "imagePullSecrets": ["ngc-pull"],
        "triton": {"replicaCount": 2, "gpu": {"count": 2},
                   "modelRepository": {"uri": "gs://bank-models/intent/model_repository",
                                       "credentialsSecret": "model-bucket-credentials"}},
        "gateway": {"image": {"registry": "registry.example.com", "repository": "ml/intent-gateway", "tag": "1.4.2"},
                    "autoscaling": {"minReplicas": 3, "maxReplicas": 20, "targetCPUUtilizationPercentage": 60},
                    "config": {"tritonTimeoutS": 0.1, "lookbackDays": 30},
                    "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
                                                   "whenUnsatisfiable": "ScheduleAnyway",
                                                   "labelSelector": {"matchLabels": {"app.kubernetes.io/component":
                                                                                     "gateway"}}}]},
        "redis": {"enabled": False, "external": {"existingSecret": "intent-redis", "existingSecretKey": "url"}},
        "otel": {"enabled": True, "endpoint": "http://otel-collector.observability:4318", "samplerArg": "0.05"},
        "metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}}},
        "networkPolicy": {"allowedClients": [{"namespaceSelector": {"matchLabels": {"team": "mobile-app"}}}]},
    },
    "pvc-repository": {"triton": {"modelRepository": {"uri": "", "existingClaim": "intent-models",
                                                      "subPath": "model_repository"}},
                       "gateway": {"artifacts": {"existingConfigMap": "", "existingClaim": "intent-artifacts"}}},
    "external-redis-url": {"redis": {"enabled": False, "external": {"url": "redis://:s3cret@redis.data:6379/2"}}},
    "inline-artifacts": {"gateway": {"artifacts": {"files": ARTIFACT_FILES}}},
    "tracing": {"otel": {"enabled": True, "endpoint": "http://collector.obs:4318",
                         "triton": {"rate": 0, "level": "TIMESTAMPS"}}},
    "cpu-single": {"triton": {"gpu": {"count": 0}, "nodeSelector": {}, "tolerations": []},
                   "gateway": {"replicaCount": 1, "autoscaling": {"enabled": False}, "pdb": {"enabled": False}},
                   "networkPolicy": {"enabled": False}, "metrics": {"enabled": False}},
    "auth-secrets": {"auth": {"tls": {"existingSecret": "gateway-tls"},
                              "jwt": {"existingSecret": "idp-signing-key", "key": "public.pem",
                                      "issuer": "https://idp.bank.example", "audience": "intent-gateway"}},
                     "privacy": {"idHashKey": {"existingSecret": "gateway-ids", "previousKeysKey": "previous"}}},
    "auth-none": {"auth": {"mode": "none"}},
    "kserve": {"mode": "kserve"},
    "kserve-serverless": {"mode": "kserve", "kserve": {"deploymentMode": "Serverless",
                                                       "transformer": {"exposedPort": "http", "allowEvents": False}}},
    "kserve-pvc-tracing": {"mode": "kserve", "otel": {"enabled": True},
                           "triton": {"modelRepository": {"uri": "", "existingClaim": "intent-models"}},
                           "redis": {"enabled": False, "external": {"url": "redis://redis.data:6379/0"}}},
}


def lint(values: dict[str, Any] | None = None) -> dict[str, Any]:
    import helm_python as helm

    return helm.lint(CHART, values or {}, strict=True, kube_version=f"v{KUBE_VERSION}", namespace=NAMESPACE)


def render(values: dict[str, Any] | None = None) -> dict[str, str]:
    """Template path -> rendered text, as `helm template` would print it (empty templates dropped)."""
    import helm_python as helm

    chart = helm.Chart.load(CHART)
    out = chart.render(values or {}, name=RELEASE, namespace=NAMESPACE, is_install=True)
    return {path: text for path, text in out.items() if text.strip()}


def manifests(rendered: dict[str, str]) -> list[dict[str, Any]]:
    """Every Kubernetes object of a render (NOTES.txt excluded), in template order."""
    docs = []
    for path, text in sorted(rendered.items()):
        if path.endswith("NOTES.txt"):
            continue
        docs.extend(d for d in yaml.safe_load_all(text) if d)
    return docs


def _custom_validator(kind: str, api_version: str):
    import jsonschema
    import kubernetes_validate
    from referencing import Registry, Resource

    group = api_version.replace("/", "-")
    path = CRD_SCHEMAS / f"{kind.lower()}-{group}.json"
    if not path.exists():
        return None
    defs_dir = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
    version_dir = defs_dir / f"v{KUBE_VERSION}-local-strict"
    definitions = json.loads((version_dir / "_definitions.json").read_text())
    registry = Registry().with_resource("https://kubernetes.io/api/_definitions.json",
                                        Resource.from_contents(definitions))
    schema = json.loads(path.read_text())
    return jsonschema.Draft202012Validator(schema, registry=registry)


def validate(doc: dict[str, Any]) -> None:
    """Raises if the object is not valid for KUBE_VERSION (strict), or has no schema at all."""
    import kubernetes_validate

    custom = _custom_validator(doc.get("kind", ""), doc.get("apiVersion", ""))
    if custom is not None:
        errors = sorted(custom.iter_errors(doc), key=lambda e: list(e.absolute_path))
        if errors:
            where = "/".join(str(p) for p in errors[0].absolute_path)
            raise ValueError(f"{doc['kind']} {doc['metadata'].get('name')}: {where}: {errors[0].message}")
        return
    kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="", help="write each variant's manifests to OUT/<variant>.yaml")
    args = parser.parse_args(argv)
    report = lint()
    problems = [m for m in report["messages"] if m["severity"] >= 2] + [{"error": e} for e in report["errors"]]
    print(f"helm lint --strict (Kubernetes {KUBE_VERSION}): {len(problems)} problem(s)")
    for p in problems:
        print("  ", p.get("path", ""), p["error"])
    failed = bool(problems)
    for name, values in VARIANTS.items():
        try:
            rendered = render(values)
            docs = manifests(rendered)
            for doc in docs:
                validate(doc)
        except Exception as exc:  # report every variant, then fail
            print(f"{name}: FAILED: {exc}")
            failed = True
            continue
        kinds = sorted({d["kind"] for d in docs})
        print(f"{name}: {len(docs)} manifests valid ({', '.join(kinds)})")
        if args.out:
            out = Path(args.out)
            out.mkdir(parents=True, exist_ok=True)
            (out / f"{name}.yaml").write_text("".join(f"---\n# Source: {p}\n{t.strip()}\n"
                                                      for p, t in sorted(rendered.items())))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
