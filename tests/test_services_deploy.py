"""Offline checks of deploy/: Docker and Kubernetes cannot run here, so check what can be checked
without them (structure and cross-references), and that the shipped configs load."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from services.config import ServeConfig

try:
    import tomllib
except ModuleNotFoundError:  # pragma: no cover
    import tomli as tomllib

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
K8S = DEPLOY / "k8s"


def k8s_objects() -> list[dict]:
    out = []
    for f in sorted(K8S.glob("*.yaml")):
        if f.name == "kustomization.yaml":
            continue
        out += [d for d in yaml.safe_load_all(f.read_text()) if d]
    return out


def test_compose_structure():
    c = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = c["services"]
    assert {"qdrant-0", "qdrant-1", "qdrant-2", "postgres", "kb", "retrieval", "tagger"} <= set(services)
    for name in ("qdrant-1", "qdrant-2"):
        assert "--bootstrap" in services[name]["command"]
    for s in services.values():
        for v in s.get("volumes", []):
            src = v.split(":")[0]
            if not src.startswith((".", "/", "$")):
                assert src in c["volumes"], src
        for sec in s.get("secrets", []):
            assert sec in c["secrets"]
        for dep in (s.get("depends_on") or {}):
            assert dep in services
    for name in ("kb", "retrieval", "tagger"):
        assert services[name]["command"] == [name]
        assert all(p.startswith("127.0.0.1:") for p in services[name]["ports"])
        assert services[name]["environment"]["VANER_QDRANT_URL"].startswith("http://qdrant-")


def test_kustomization_lists_every_manifest():
    k = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert sorted(k["resources"]) == sorted(f.name for f in K8S.glob("*.yaml") if f.name != "kustomization.yaml")


def test_k8s_objects_are_consistent():
    objs = k8s_objects()
    by_kind: dict[str, dict[str, dict]] = {}
    for o in objs:
        assert {"apiVersion", "kind", "metadata"} <= set(o), o
        by_kind.setdefault(o["kind"], {})[o["metadata"]["name"]] = o
    workloads = {**by_kind.get("Deployment", {}), **by_kind.get("StatefulSet", {})}
    assert by_kind["StatefulSet"]["qdrant"]["spec"]["replicas"] == 3
    assert by_kind["Deployment"]["vaner-tagger"]["spec"]["replicas"] >= 2
    assert set(by_kind["Deployment"]) == {"vaner-kb", "vaner-retrieval", "vaner-tagger"}
    pod_labels = {}
    for name, w in workloads.items():
        sel = w["spec"]["selector"]["matchLabels"]
        labels = w["spec"]["template"]["metadata"]["labels"]
        assert sel.items() <= labels.items(), name
        pod_labels[name] = (labels, w["spec"]["template"]["spec"])
        for vol in w["spec"]["template"]["spec"].get("volumes", []):
            if "configMap" in vol:
                assert vol["configMap"]["name"] in by_kind["ConfigMap"]
            if "persistentVolumeClaim" in vol:
                assert vol["persistentVolumeClaim"]["claimName"] in by_kind["PersistentVolumeClaim"]
            if "secret" in vol:
                assert vol["secret"]["secretName"] in by_kind["Secret"] or vol["secret"]["secretName"] == "vaner-tls"
    for name, svc in by_kind["Service"].items():
        sel = svc["spec"]["selector"]
        matches = [spec for labels, spec in pod_labels.values() if sel.items() <= labels.items()]
        assert matches, f"Service {name} selects no pods"
        declared = {(p.get("name"), p["containerPort"]) for spec in matches for c in spec["containers"]
                    for p in c.get("ports", [])}
        for port in svc["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            assert any(target in (n, cp) for n, cp in declared), (name, target)
    hpa = by_kind["HorizontalPodAutoscaler"]["vaner-tagger"]
    assert hpa["spec"]["scaleTargetRef"]["name"] in by_kind["Deployment"]


@pytest.mark.parametrize("source", ["compose", "k8s"])
def test_shipped_configs_load(tmp_path, source):
    if source == "compose":
        data = tomllib.loads((DEPLOY / "vaner.toml").read_text())
    else:
        cm = next(o for o in k8s_objects() if o["kind"] == "ConfigMap")
        data = tomllib.loads(cm["data"]["vaner.toml"])
    for key in ("tls_cert", "tls_key", "token_file"):  # the mounted secrets, faked here
        f = tmp_path / key
        f.write_text("x")
        data["security"][key] = str(f)
    cfg = ServeConfig.from_dict(data, env={})
    assert cfg.server.host == "0.0.0.0" and cfg.security.tls and cfg.security.token()
    del data["security"]["token_file"]
    with pytest.raises(Exception, match="refusing to bind"):
        ServeConfig.from_dict(data, env={})


def test_dockerfile_entrypoint():
    text = (DEPLOY / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["vaner", "serve"]' in text and "torch==${TORCH_VERSION}" in text
    assert "USER vaner" in text and "HEALTHCHECK" in text
