"""deploy/ and the Dockerfile: the manifests render offline with the real kubectl, validate
against Kubernetes' schemas, and keep what matters (read-only RBAC, migrate before serving,
non-root on a read-only root file system, settings that exist).

Every kubectl named in DEPLOY_TEST_KUBECTLS (paths separated by `os.pathsep`) renders too,
besides the one on PATH: e.g. Debian 12's kubectl 1.20, whose kustomize is v2.0.3.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path, PurePosixPath
from typing import Any

import kubernetes_validate
import pytest
import yaml

from store.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
TARGETS = {"base": DEPLOY / "base", "govcloud": DEPLOY / "overlays" / "govcloud"}
# Schemas shipped inside kubernetes-validate (no download): an older and a recent release.
K8S_VERSIONS = ("1.31", "1.35")
HOME = "/var/lib/opsledger"
READ_VERBS = {"get", "list", "watch"}
# The only objects the manifests create; a new kind is a decision to review here.
EXPECTED_KINDS = sorted(
    [
        "ClusterRole",
        "ClusterRole",
        "ClusterRoleBinding",
        "ClusterRoleBinding",
        "ConfigMap",
        "Deployment",
        "Namespace",
        "PersistentVolumeClaim",
        "Service",
        "ServiceAccount",
    ]
)
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding"}
# Values that must come from the Secret, never from the manifests.
SECRET_SETTINGS = {"OPSLEDGER_DATABASE_URL", "OPSLEDGER_PAGERDUTY_WEBHOOK_SECRET"}


def _kubectls() -> list[str]:
    found = shutil.which("kubectl")
    extra = [p for p in os.environ.get("DEPLOY_TEST_KUBECTLS", "").split(os.pathsep) if p]
    return [*([found] if found else []), *extra]


KUBECTLS = _kubectls()


@functools.cache
def render_with(kubectl: str, target: str) -> tuple[dict[str, Any], ...]:
    """`kubectl kustomize` of a target: its objects, in the order kubectl printed them."""
    proc = subprocess.run(
        [kubectl, "kustomize", str(TARGETS[target])],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, f"{kubectl} kustomize {target} failed:\n{proc.stderr}"
    return tuple(d for d in yaml.safe_load_all(proc.stdout) if d)


def render(target: str) -> tuple[dict[str, Any], ...]:
    """The target rendered by the kubectl on PATH (CI installs one; no skip without it)."""
    if not KUBECTLS:
        pytest.fail("kubectl is not on PATH (Debian: apt-get install kubernetes-client)")
    return render_with(KUBECTLS[0], target)


def one(objs: tuple[dict[str, Any], ...], kind: str) -> dict[str, Any]:
    found = [o for o in objs if o["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def by_name(objs: tuple[dict[str, Any], ...], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objs if o["kind"] == kind}


def pod_spec(objs: tuple[dict[str, Any], ...]) -> dict[str, Any]:
    spec: dict[str, Any] = one(objs, "Deployment")["spec"]["template"]["spec"]
    return spec


def pod_labels(objs: tuple[dict[str, Any], ...]) -> dict[str, str]:
    labels: dict[str, str] = one(objs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    return labels


def containers(objs: tuple[dict[str, Any], ...]) -> list[dict[str, Any]]:
    spec = pod_spec(objs)
    return [*spec.get("initContainers", []), *spec["containers"]]


def main_container(objs: tuple[dict[str, Any], ...]) -> dict[str, Any]:
    main = pod_spec(objs)["containers"]
    assert len(main) == 1, "one application container"
    container: dict[str, Any] = main[0]
    return container


def init_container(objs: tuple[dict[str, Any], ...]) -> dict[str, Any]:
    inits = pod_spec(objs).get("initContainers", [])
    assert len(inits) == 1, "one init container: the migration"
    container: dict[str, Any] = inits[0]
    return container


def argv(container: dict[str, Any]) -> list[str]:
    return [*container.get("command", []), *container.get("args", [])]


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


def _normalised(objs: tuple[dict[str, Any], ...]) -> list[str]:
    """Objects as comparable text, generated names' hash suffixes and empty maps removed."""

    def clean(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items() if v != {}}
        if isinstance(value, list):
            return [clean(v) for v in value]
        if isinstance(value, str):
            return re.sub(r"^(opsledger-collectors)-[a-z0-9]{10}$", r"\1", value)
        return value

    return sorted(yaml.safe_dump(clean(o), sort_keys=True) for o in objs)


# -- rendering and schemas -------------------------------------------------------------------


@pytest.mark.kubectl
@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("kubectl", KUBECTLS or ["kubectl"])
def test_renders_offline_with_the_expected_objects(kubectl: str, target: str) -> None:
    if not KUBECTLS:
        pytest.fail("kubectl is not on PATH (Debian: apt-get install kubernetes-client)")
    objs = render_with(kubectl, target)
    assert sorted(o["kind"] for o in objs) == EXPECTED_KINDS
    assert not [o for o in objs if o["kind"] == "Secret"], "secrets are created by users"


@pytest.mark.kubectl
@pytest.mark.parametrize("target", TARGETS)
def test_every_kubectl_renders_the_same_objects(target: str) -> None:
    if len(KUBECTLS) < 2:
        pytest.skip("one kubectl; set DEPLOY_TEST_KUBECTLS to compare another (e.g. 1.20)")
    first = _normalised(render_with(KUBECTLS[0], target))
    for kubectl in KUBECTLS[1:]:
        assert _normalised(render_with(kubectl, target)) == first, kubectl


@pytest.mark.kubectl
@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("target", TARGETS)
def test_every_object_validates_against_the_kubernetes_schema(target: str, version: str) -> None:
    for obj in render(target):
        where = f"{target}: {obj['kind']}/{obj['metadata']['name']}"
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{where} is invalid for Kubernetes {version}: {path}: {exc.message}")


@pytest.mark.kubectl
@pytest.mark.parametrize("target", TARGETS)
def test_namespaced_objects_and_subjects_share_the_namespace(target: str) -> None:
    objs = render(target)
    namespace = one(objs, "Namespace")["metadata"]["name"]
    for obj in objs:
        if obj["kind"] not in CLUSTER_SCOPED:
            assert obj["metadata"].get("namespace") == namespace, obj["metadata"]["name"]
    for binding in by_name(objs, "ClusterRoleBinding").values():
        for subject in binding["subjects"]:
            assert subject.get("namespace") == namespace, binding["metadata"]["name"]


# -- RBAC ------------------------------------------------------------------------------------


def _grants(role: dict[str, Any]) -> set[tuple[str, str, str]]:
    return {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule.get("apiGroups", [])
        for resource in rule.get("resources", [])
        for verb in rule.get("verbs", [])
    }


@pytest.mark.kubectl
@pytest.mark.parametrize("target", TARGETS)
def test_cluster_roles_only_read_and_never_secrets(target: str) -> None:
    objs = render(target)
    assert not [o for o in objs if o["kind"] in {"Role", "RoleBinding"}]
    roles = by_name(objs, "ClusterRole")
    assert set(roles) == {"opsledger-read", "opsledger-kubelet-stats"}
    for name, role in roles.items():
        assert "aggregationRule" not in role, name
        for rule in role["rules"]:
            assert "nonResourceURLs" not in rule, name
            assert set(rule["verbs"]) <= READ_VERBS, f"{name}: {rule['verbs']}"
            assert "*" not in rule["apiGroups"] + rule["resources"] + rule["verbs"], name
            for resource in rule["resources"]:
                assert resource.split("/")[0] not in {"secrets", "configmaps"}, name
    read = _grants(roles["opsledger-read"])
    assert not [g for g in read if "/" in g[1]], "no subresources in the read role"
    core = ("events", "nodes", "pods", "persistentvolumeclaims")
    wanted = {("", r, v) for r in core for v in READ_VERBS}
    wanted |= {("events.k8s.io", "events", v) for v in READ_VERBS}
    wanted |= {("metrics.k8s.io", r, v) for r in ("nodes", "pods") for v in ("get", "list")}
    # Owners of pods (ReplicaSet → Deployment, Job → CronJob) and Karpenter NodePools.
    for group, resource in (
        ("apps", "replicasets"),
        ("batch", "jobs"),
        ("karpenter.sh", "nodepools"),
    ):
        wanted |= {(group, resource, v) for v in ("get", "list")}
    assert read == wanted
    # get on nodes/proxy reaches every kubelet API (exec over WebSocket too): alone, and
    # only there, so that an overlay can drop it whole.
    assert _grants(roles["opsledger-kubelet-stats"]) == {("", "nodes/proxy", "get")}


@pytest.mark.kubectl
@pytest.mark.parametrize("target", TARGETS)
def test_bindings_give_the_roles_to_the_pods_service_account(target: str) -> None:
    objs = render(target)
    account = pod_spec(objs)["serviceAccountName"]
    assert account in by_name(objs, "ServiceAccount")
    roles = by_name(objs, "ClusterRole")
    bound = set()
    for binding in by_name(objs, "ClusterRoleBinding").values():
        assert binding["roleRef"]["kind"] == "ClusterRole"
        assert binding["roleRef"]["name"] in roles
        assert [(s["kind"], s["name"]) for s in binding["subjects"]] == [
            ("ServiceAccount", account)
        ]
        bound.add(binding["roleRef"]["name"])
    assert bound == set(roles)


# -- the Deployment --------------------------------------------------------------------------


@pytest.mark.kubectl
@pytest.mark.parametrize("target", TARGETS)
def test_one_replica_migrates_before_serving(target: str) -> None:
    objs = render(target)
    deployment = one(objs, "Deployment")
    # One writer of the embedded ledger and the read model: never two pods at once.
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"]["type"] == "Recreate"
    init, main = init_container(objs), main_container(objs)
    assert argv(init) == ["opsledger", "db", "upgrade"]
    assert argv(main)[:2] == ["opsledger", "serve"]
    serve = argv(main)
    assert serve[serve.index("--host") + 1] == "0.0.0.0"
    assert init["image"] == main["image"]
    # The migration must reach the ledger the server opens.
    for name in ("OPSLEDGER_ENV", "OPSLEDGER_HOME", "OPSLEDGER_DATABASE_URL"):
        assert env_of(init).get(name) == env_of(main).get(name), name
        assert name in env_of(main), name


@pytest.mark.kubectl
@pytest.mark.parametrize("target", TARGETS)
def test_probes_hit_healthz_and_readyz_on_the_served_port(target: str) -> None:
    objs = render(target)
    main = main_container(objs)
    port = argv(main)[argv(main).index("--port") + 1]
    ports = {p["name"]: p["containerPort"] for p in main["ports"]}
    assert ports == {"http": int(port)} == {"http": 8000}
    expected = {
        "readinessProbe": "/readyz",
        "livenessProbe": "/healthz",
        "startupProbe": "/healthz",
    }
    for probe, path in expected.items():
        get = main[probe]["httpGet"]
        assert get["path"] == path, probe
        assert get["port"] in ("http", 8000), probe
    service = one(objs, "Service")
    assert service["spec"]["type"] == "ClusterIP"
    [svc_port] = service["spec"]["ports"]
    assert svc_port["port"] == 8000
    assert svc_port["targetPort"] in ("http", 8000)
    labels = pod_labels(objs)
    assert service["spec"]["selector"].items() <= labels.items()


@pytest.mark.kubectl
@pytest.mark.parametrize("target", TARGETS)
def test_runs_as_non_root_on_a_read_only_root_file_system(target: str) -> None:
    objs = render(target)
    spec = pod_spec(objs)
    pod_security = spec["securityContext"]
    assert pod_security["runAsNonRoot"] is True
    assert pod_security["runAsUser"] != 0
    assert pod_security["seccompProfile"]["type"] == "RuntimeDefault"
    # Service links would add OPSLEDGER_PORT, OPSLEDGER_SERVICE_HOST, ... to the environment.
    assert spec["enableServiceLinks"] is False
    volumes = {v["name"]: v for v in spec["volumes"]}
    for container in containers(objs):
        name = container["name"]
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True, name
        assert security["allowPrivilegeEscalation"] is False, name
        assert security["capabilities"]["drop"] == ["ALL"], name
        assert security.get("runAsUser", pod_security["runAsUser"]) != 0, name
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(container["resources"][kind]), f"{name}: {kind}"
        # The only writable places: the ledger's volume and /tmp.
        mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
        assert env_of(container)["OPSLEDGER_HOME"]["value"] == HOME, name
        assert "emptyDir" in volumes[mounts["/tmp"]["name"]], name
        data = volumes[mounts[HOME]["name"]]
        assert data["persistentVolumeClaim"]["claimName"] in by_name(objs, "PersistentVolumeClaim")
        writable = {p for p, m in mounts.items() if not m.get("readOnly")}
        assert writable == {HOME, "/tmp"}, name


@pytest.mark.kubectl
@pytest.mark.parametrize("target", TARGETS)
def test_the_collectors_config_map_is_mounted_at_the_collectors_file(target: str) -> None:
    objs = render(target)
    main = main_container(objs)
    path = PurePosixPath(env_of(main)["OPSLEDGER_COLLECTORS_FILE"]["value"])
    mounts = {m["mountPath"]: m for m in main["volumeMounts"]}
    mount = mounts[str(path.parent)]
    assert mount.get("readOnly") is True
    volume = {v["name"]: v for v in pod_spec(objs)["volumes"]}[mount["name"]]
    config_map = by_name(objs, "ConfigMap")[volume["configMap"]["name"]]
    items = {i["path"]: i["key"] for i in volume["configMap"].get("items", [])}
    key = items.get(path.name, path.name)
    content = yaml.safe_load(config_map["data"][key])
    assert content["clusters"], "at least one cluster"
    for cluster in content["clusters"]:
        assert cluster["kubernetes"] == {"in_cluster": True}
        assert cluster["prometheus"]["url"].startswith("http")
    assert content["aws"]["region"] == "us-gov-west-1"


@pytest.mark.kubectl
@pytest.mark.parametrize("target", TARGETS)
def test_the_collectors_file_matches_the_collectors_schema(target: str, tmp_path: Path) -> None:
    # The schema (ingest/collectors/config.py) was written alongside these manifests; once
    # it imports, the shipped file must load, or `opsledger serve` would stop at start.
    # Parsed only: building the collectors would need the cluster's in-cluster credentials.
    config = pytest.importorskip("ingest.collectors.config", exc_type=ImportError)
    from ingest.collectors.yamlfile import load_yaml

    objs = render(target)
    for name, config_map in by_name(objs, "ConfigMap").items():
        for key, text in config_map["data"].items():
            path = tmp_path / f"{name}-{key}"
            path.write_text(text, encoding="utf-8")
            load_yaml(path, config.CollectorsFile)


@pytest.mark.kubectl
@pytest.mark.parametrize("target", TARGETS)
def test_every_opsledger_variable_is_a_setting_and_secrets_come_from_the_secret(
    target: str,
) -> None:
    objs = render(target)
    known = {f"OPSLEDGER_{field.upper()}" for field in Settings.model_fields}
    # OPSLEDGER_COLLECTORS_FILE is being added to Settings alongside these manifests (issue
    # #5); allowed by name until then, checked like every other once it is a field.
    known |= {"OPSLEDGER_COLLECTORS_FILE"}
    for container in containers(objs):
        env = env_of(container)
        names = {n for n in env if n.upper().startswith("OPSLEDGER_")}
        assert names <= known, f"{container['name']}: not settings: {sorted(names - known)}"
        for name in names & SECRET_SETTINGS:
            ref = env[name]["valueFrom"]["secretKeyRef"]
            assert ref["name"] == "opsledger" and ref["optional"] is True, name
        # The literal values are valid settings (production refuses a relative home).
        values = {
            n.removeprefix("OPSLEDGER_").lower(): e["value"] for n, e in env.items() if "value" in e
        }
        settings = Settings(**{k: v for k, v in values.items() if k in Settings.model_fields})
        assert settings.env == "production"
        assert str(settings.home) == HOME


@pytest.mark.kubectl
def test_the_govcloud_overlay_pulls_from_ecr_and_stores_on_gp3() -> None:
    objs = render("govcloud")
    for container in containers(objs):
        assert re.fullmatch(
            r"\d{12}\.dkr\.ecr\.us-gov-west-1\.amazonaws\.com/opsledger:[\w.-]+", container["image"]
        ), container["image"]
    assert one(objs, "PersistentVolumeClaim")["spec"]["storageClassName"] == "gp3"
    env = env_of(main_container(objs))
    assert env["AWS_REGION"]["value"] == env["AWS_DEFAULT_REGION"]["value"] == "us-gov-west-1"
    base_pvc = one(render("base"), "PersistentVolumeClaim")
    assert "storageClassName" not in base_pvc["spec"], "the storage class is the overlay's"


def _docs_block(marker: str) -> str:
    text = (ROOT / "docs" / "deployment.md").read_text(encoding="utf-8")
    for m in re.finditer(r"^```yaml\n(.*?)^```", text, re.MULTILINE | re.DOTALL):
        if m.group(1).startswith(marker):
            return m.group(1)
    raise AssertionError(f"docs/deployment.md has no yaml block starting with {marker!r}")


@pytest.mark.kubectl
@pytest.mark.parametrize("kubectl", KUBECTLS or ["kubectl"])
def test_the_documented_overlay_without_kubelet_stats_renders(kubectl: str, tmp_path: Path) -> None:
    if not KUBECTLS:
        pytest.fail("kubectl is not on PATH (Debian: apt-get install kubernetes-client)")
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(_docs_block("# kustomization.yaml"))
    (overlay / "no-kubelet-stats.yaml").write_text(_docs_block("# no-kubelet-stats.yaml"))
    # The documented overlay sits beside deploy/overlays/govcloud; this one in tmp_path.
    base = os.path.relpath(TARGETS["base"], overlay)
    text = (overlay / "kustomization.yaml").read_text().replace("../../base", base)
    (overlay / "kustomization.yaml").write_text(text)
    proc = subprocess.run(
        [kubectl, "kustomize", str(overlay)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    objs = tuple(d for d in yaml.safe_load_all(proc.stdout) if d)
    assert "nodes/proxy" not in proc.stdout
    assert set(by_name(objs, "ClusterRole")) == set(by_name(objs, "ClusterRoleBinding"))
    assert set(by_name(objs, "ClusterRole")) == {"opsledger-read"}


# -- the image -------------------------------------------------------------------------------


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """The Dockerfile's stages, each a list of (INSTRUCTION, arguments), continuations joined."""
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    stages: list[list[tuple[str, str]]] = []
    for line in joined.splitlines():
        if not line.strip():
            continue
        instruction, _, rest = line.strip().partition(" ")
        if instruction.upper() == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((instruction.upper(), " ".join(rest.split())))
    return stages


@pytest.mark.kubectl
def test_the_image_installs_from_wheels_only_and_runs_as_the_deployments_user() -> None:
    stages = dockerfile_stages()
    assert len(stages) >= 2, "multi-stage: a builder, then the runtime image"
    builder, final = stages[0], stages[-1]
    assert any(i == "RUN" and "pip wheel" in a for i, a in builder)
    installs = [a for i, a in final if i == "RUN" and "pip install" in a]
    assert installs, "the final stage installs the wheels"
    for install in installs:
        assert "--no-index" in install and "--find-links" in install, install
    users = [a for i, a in final if i == "USER"]
    assert users, "the final stage sets USER"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) != 0, "a numeric non-root uid, for runAsNonRoot"
    spec = pod_spec(render("base"))["securityContext"]
    assert int(uid) == spec["runAsUser"]
    assert int(gid or uid) == spec["runAsGroup"] == spec["fsGroup"]
    env = " ".join(a for i, a in final if i == "ENV")
    assert f"OPSLEDGER_HOME={HOME}" in env
    assert ("EXPOSE", "8000") in final
    assert ("ENTRYPOINT", '["opsledger"]') in final
    assert ("CMD", '["serve", "--host", "0.0.0.0", "--port", "8000"]') in final


def test_the_image_build_context_holds_every_package() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {p.rstrip("*").rstrip(".") for p in patterns}
    ignore = (ROOT / ".dockerignore").read_text(encoding="utf-8").split()
    copied = " ".join(a for stage in dockerfile_stages() for i, a in stage if i == "COPY")
    for package in sorted(packages):
        assert f"!{package}/" in ignore, f".dockerignore leaves out {package}/"
        assert f"{package}/ {package}/" in copied, f"the Dockerfile does not COPY {package}/"


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_the_kubernetes_objects_in_the_docs_validate(version: str) -> None:
    text = (ROOT / "docs" / "deployment.md").read_text(encoding="utf-8")
    checked = 0
    for m in re.finditer(r"^```yaml\n(.*?)^```", text, re.MULTILINE | re.DOTALL):
        for doc in yaml.safe_load_all(m.group(1)):
            # Kustomizations have no API schema; `$patch: delete` stubs are not objects; a
            # Prometheus scrape config is not a Kubernetes object at all, and CRDs such as the
            # Prometheus Operator's ServiceMonitor have no schema in kubernetes-validate.
            if not doc or doc.get("kind") == "Kustomization" or "$patch" in doc:
                continue
            if "apiVersion" not in doc or doc["apiVersion"].startswith("monitoring.coreos.com/"):
                continue
            kubernetes_validate.validate(doc, version, strict=True)
            checked += 1
    assert checked >= 2, "the StorageClass and the IRSA ServiceAccount patch"


@pytest.mark.prometheus
def test_the_documented_prometheus_scrape_config_is_valid(tmp_path: Path) -> None:
    """`promtool check config` (the Debian package CI installs) accepts docs/deployment.md's."""
    text = (ROOT / "docs" / "deployment.md").read_text(encoding="utf-8")
    block = next(
        m.group(1)
        for m in re.finditer(r"^```yaml\n(.*?)^```", text, re.MULTILINE | re.DOTALL)
        if m.group(1).startswith("scrape_configs:")
    )
    (tmp_path / "opsledger.token").write_text("olk_example\n", encoding="utf-8")
    config = tmp_path / "prometheus.yml"
    config.write_text(
        block.replace("/etc/prometheus/opsledger.token", str(tmp_path / "opsledger.token")),
        encoding="utf-8",
    )
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing (Debian: apt-get install prometheus)"
    proc = subprocess.run(
        [promtool, "check", "config", str(config)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
