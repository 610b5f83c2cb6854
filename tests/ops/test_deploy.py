"""ops/deploy/ checked offline: every Kubernetes object against the Kubernetes JSON schemas kubernetes-validate
ships (strict: an unknown field is an error), the Agones objects against the checked-in schemas derived from
Agones' CRDs (ops/deploy/schemas/), their pod templates against Kubernetes' PodTemplate; the commands they
run parse with the `rehearsal` CLI; the Dockerfile is multi-stage and warms numba's cache at build."""

import copy
import json
import re
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from rehearsal.cli import build_parser

DEPLOY = Path(__file__).resolve().parents[2] / "ops" / "deploy"
K8S_VERSION = "1.37.0"
AGONES = {
    ("agones.dev/v1", "GameServer"): "agones-gameserver-v1.json",
    ("agones.dev/v1", "Fleet"): "agones-fleet-v1.json",
    ("autoscaling.agones.dev/v1", "FleetAutoscaler"): "agones-fleetautoscaler-v1.json",
}


def _objects():
    out = []
    for path in sorted(DEPLOY.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                out.append((path.name, doc))
    return out


def _agones_schema(name):
    return json.loads((DEPLOY / "schemas" / name).read_text())


def _validate_agones(doc):
    schema = _agones_schema(AGONES[(doc["apiVersion"], doc["kind"])])
    jsonschema.Draft7Validator(schema).validate(doc)


def _pod_template(doc):
    spec = doc["spec"]["template"]["spec"] if doc["kind"] == "Fleet" else doc["spec"]
    return {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "t"}, "template": spec["template"]}


def test_the_deploy_folder_has_what_the_operator_needs():
    kinds = {(doc["apiVersion"], doc["kind"]) for _, doc in _objects()}
    assert set(AGONES) <= kinds
    assert {("apps/v1", "Deployment"), ("v1", "Service"), ("v1", "ConfigMap"), ("v1", "PersistentVolumeClaim")} <= kinds
    assert (DEPLOY / "README.md").read_text().count("cluster run") >= 1


@pytest.mark.parametrize("name,doc", _objects(), ids=lambda v: v if isinstance(v, str) else v.get("kind", "?"))
def test_each_object_is_valid(name, doc):
    key = (doc["apiVersion"], doc["kind"])
    if key in AGONES:
        _validate_agones(doc)
        if doc["kind"] != "FleetAutoscaler":
            kubernetes_validate.validate(_pod_template(doc), K8S_VERSION, strict=True)
    else:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_the_validation_catches_mistakes():
    [gs] = [doc for _, doc in _objects() if doc["kind"] == "GameServer"]
    bad = copy.deepcopy(gs)
    bad["spec"]["ports"][0]["portPolicy"] = "Sometimes"
    with pytest.raises(jsonschema.ValidationError):
        _validate_agones(bad)
    bad = copy.deepcopy(gs)
    bad["spec"]["health"]["periodSeconds"] = "often"
    with pytest.raises(jsonschema.ValidationError):
        _validate_agones(bad)
    bad = copy.deepcopy(gs)
    bad["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(_pod_template(bad), K8S_VERSION, strict=True)
    [svc] = [doc for _, doc in _objects() if doc["kind"] == "Service"][:1]
    bad = copy.deepcopy(svc)
    bad["spec"]["ports"][0]["port"] = "eighty"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSION, strict=True)


def _args(container):
    return [re.sub(r"\$\((\w+)\)", r"\1", a) for a in container["args"]]


def test_the_commands_the_manifests_run_parse():
    parser = build_parser()
    for _, doc in _objects():
        if doc["kind"] in ("GameServer", "Deployment", "Fleet"):
            template = doc["spec"]["template"]
            if doc["kind"] == "Fleet":
                template = template["spec"]["template"]
            for container in template["spec"]["containers"]:
                if container["image"].startswith("rehearsal"):
                    args = parser.parse_args(_args(container))
                    assert args.command in ("serve", "join-service")
                    assert args.redis == "redis://rehearsal-directory:6379/0"


def test_the_fleet_runs_the_gameserver_template():
    [gs] = [doc for _, doc in _objects() if doc["kind"] == "GameServer"]
    [fleet] = [doc for _, doc in _objects() if doc["kind"] == "Fleet"]
    assert fleet["spec"]["template"]["spec"] == gs["spec"]
    [scaler] = [doc for _, doc in _objects() if doc["kind"] == "FleetAutoscaler"]
    assert scaler["spec"]["fleetName"] == fleet["metadata"]["name"]


def test_the_dockerfile_is_multi_stage_and_warms_the_numba_cache():
    text = (DEPLOY / "Dockerfile").read_text()
    assert len(re.findall(r"^FROM ", text, re.M)) == 2
    assert "warm_up" in text and "NUMBA_CACHE_DIR" in text and "--from=build" in text
    assert re.search(r"^USER (?!root)", text, re.M)
    cmd = json.loads(re.search(r"^CMD (.*)$", text, re.M).group(1))
    assert build_parser().parse_args(cmd).command == "serve"


def test_the_agones_schemas_say_where_they_came_from():
    for name in AGONES.values():
        assert "googleforgames/agones" in _agones_schema(name)["$comment"]
