"""docker-compose.yml: a valid Compose file, and the production topology the operations issue
asks for. No Docker engine runs here; `docker compose config` / `docker-compose config` needs
none (Debian's `docker-compose` package). The configuration files it mounts (HAProxy,
Prometheus, Grafana) are checked too, with `haproxy -c` and `promtool` where installed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from infrastructure.settings import DEVELOPMENT_RESERVATION_KEY, Settings
from tests.certificates import CERTIFICATE_IN_LB, make_certificate
from tests.servers import ROOT

COMPOSE_FILE = ROOT / "docker-compose.yml"
DEPLOY = ROOT / "infrastructure" / "deploy"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "signup.json"

# What `up` needs from the operator's environment; the file refuses to start without them.
SECRETS = {
    "SIGNUP_RESERVATION_KEY": "a-production-reservation-key-0123456789",
    "SIGNUP_EVENT_CIPHER_KEY": "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
    "POSTGRES_PASSWORD": "pg-secret",
    "REPLICATION_PASSWORD": "replication-secret",
    "GRAFANA_ADMIN_PASSWORD": "grafana-secret",
}
POSTGRES_SERVICES = ("events-db", "read-db", "read-replica", "shard-0-db", "shard-1-db")
SIGNUP_SERVICES = ("migrate", "api", "worker")
# Environment variables that are not signup settings but belong to a library.
LIBRARY_VARIABLES = {"PROMETHEUS_MULTIPROC_DIR"}


def _compose_command() -> list[str] | None:
    """The Compose v2 plugin if the docker CLI has it, else the standalone docker-compose."""
    docker = shutil.which("docker")
    if docker is not None:
        probe = subprocess.run(
            [docker, "compose", "version"], capture_output=True, timeout=30, check=False
        )
        if probe.returncode == 0:
            return [docker, "compose"]
    standalone = shutil.which("docker-compose")
    return [standalone] if standalone else None


COMPOSE = _compose_command()
needs_compose = pytest.mark.skipif(
    COMPOSE is None,
    reason="neither `docker compose` nor `docker-compose` is installed "
    "(apt-get install docker-compose)",
)


def _run_config(environ: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    assert COMPOSE is not None
    env = {k: v for k, v in os.environ.items() if k not in SECRETS} | dict(environ)
    return subprocess.run(
        [*COMPOSE, "--file", str(COMPOSE_FILE), "--project-name", "signup", "config", "-q"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


_VARIABLE = re.compile(r"\$(?:\$|\{(\w+)(?::([-?])([^}]*))?\})")


def _interpolate(value: Any, environ: Mapping[str, str]) -> Any:
    """Compose's ${VAR}, ${VAR:-default}, ${VAR:?error} and $$, enough for this file."""
    if isinstance(value, dict):
        return {k: _interpolate(v, environ) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, environ) for v in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        name, kind, rest = match.groups()
        if name is None:
            return "$"
        if environ.get(name):
            return environ[name]
        if kind == "?":
            raise KeyError(f"{name}: {rest}")
        return rest if kind == "-" else ""

    return _VARIABLE.sub(substitute, value)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """The file as Compose reads it: anchors and merge keys resolved, variables interpolated."""
    raw = yaml.safe_load(COMPOSE_FILE.read_text())
    return {k: _interpolate(v, SECRETS) for k, v in raw.items() if not k.startswith("x-")}


def _service(compose: dict[str, Any], name: str) -> dict[str, Any]:
    service: dict[str, Any] = compose["services"][name]
    return service


def _command(service: dict[str, Any]) -> list[str]:
    command = service.get("command", [])
    return command.split() if isinstance(command, str) else [str(part) for part in command]


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(entry.split("=", 1) for entry in env)
    return {str(k): str(v) for k, v in env.items()}


def _bind_mounts(service: dict[str, Any]) -> dict[str, str]:
    """Container path → host path (relative to the repository), for ./ bind mounts."""
    mounts = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("."):
            mounts[target] = source
    return mounts


# ── The Compose file is valid ─────────────────────────────────────────────────────────────────


@needs_compose
def test_docker_compose_config_accepts_the_file() -> None:
    answer = _run_config(SECRETS)
    assert answer.returncode == 0, answer.stderr


@needs_compose
def test_docker_compose_config_refuses_to_run_without_the_secrets() -> None:
    answer = _run_config({k: v for k, v in SECRETS.items() if k != "SIGNUP_RESERVATION_KEY"})
    assert answer.returncode != 0
    assert "SIGNUP_RESERVATION_KEY" in answer.stderr


# ── The topology ──────────────────────────────────────────────────────────────────────────────


def test_every_part_of_the_production_topology_is_there(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in POSTGRES_SERVICES:
        assert services[name]["image"].startswith("postgres:"), name
    assert "valkey" in services["redis"]["image"] or "redis" in services["redis"]["image"]
    assert services["lb"]["image"].startswith("haproxy:")
    assert services["prometheus"]["image"].startswith("prom/prometheus:")
    assert services["grafana"]["image"].startswith("grafana/grafana:")
    assert _command(services["migrate"])[-1] == "migrate"
    assert _command(services["worker"])[-1] == "worker"
    assert services["api"]["deploy"]["replicas"] >= 2
    api = _command(services["api"])
    assert api == ["api", "--host", "0.0.0.0", "--port", "8000", "--workers", "2"]
    # Only the load balancer takes outside traffic.
    assert "ports" not in services["api"]
    assert any(str(port).endswith(":80") for port in services["lb"]["ports"])


def test_the_signup_processes_are_configured_through_every_required_setting(
    compose: dict[str, Any],
) -> None:
    for name in SIGNUP_SERVICES:
        env = _environment(_service(compose, name))
        settings = Settings.from_env(env)
        assert settings.database_url and "@events-db:" in settings.database_url, name
        assert "@read-db:" in settings.read_url, name
        shards = settings.shard_urls
        assert [url.split("@")[1].split(":")[0] for url in shards] == ["shard-0-db", "shard-1-db"]
        assert settings.redis_url == "redis://redis:6379/0", name
        assert settings.reservation_key == SECRETS["SIGNUP_RESERVATION_KEY"], name
        assert settings.reservation_key != DEVELOPMENT_RESERVATION_KEY
        assert settings.event_cipher_key == SECRETS["SIGNUP_EVENT_CIPHER_KEY"], name
        assert env["SIGNUP_LOGICAL_SHARDS"], name


def test_every_variable_given_to_signup_is_a_setting_it_reads(compose: dict[str, Any]) -> None:
    """A misspelt name would be silently ignored and leave the default in force."""
    for name in SIGNUP_SERVICES:
        env = _environment(_service(compose, name))
        recording = _RecordingEnviron(env)
        Settings.from_env(recording)
        unknown = set(env) - recording.asked - LIBRARY_VARIABLES
        assert not unknown, f"{name}: {sorted(unknown)}"


class _RecordingEnviron(Mapping[str, str]):
    """An environment that remembers which names were looked up."""

    def __init__(self, values: Mapping[str, str]) -> None:
        self._values = dict(values)
        self.asked: set[str] = set()

    def __getitem__(self, key: str) -> str:
        self.asked.add(key)
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)


def test_the_worker_sends_its_mail_to_the_mail_catcher_whose_web_ui_is_published(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    assert services["mailpit"]["image"].startswith("axllent/mailpit:")
    assert any(str(port).endswith(":8025") for port in services["mailpit"]["ports"])
    worker = Settings.from_env(_environment(_service(compose, "worker")))
    assert worker.smtp_url == "smtp://mailpit:1025"
    # Links in the messages lead to the load balancer's HTTPS entrance.
    assert worker.public_url == "https://localhost:8443"
    assert "mailpit" in services["worker"]["depends_on"]


def test_the_api_trusts_forwarded_for_from_the_compose_network_only(
    compose: dict[str, Any],
) -> None:
    settings = Settings.from_env(_environment(_service(compose, "api")))
    subnets = [entry["subnet"] for entry in compose["networks"]["default"]["ipam"]["config"]]
    assert list(settings.trusted_proxies) == subnets
    haproxy = (DEPLOY / "haproxy" / "haproxy.cfg").read_text()
    assert re.search(r"^\s*option forwardfor\b", haproxy, re.MULTILINE)
    assert re.search(r"^\s*server-template \S+ \d+ api:8000\b", haproxy, re.MULTILINE)
    assert _bind_mounts(_service(compose, "lb")) == {
        "/usr/local/etc/haproxy/haproxy.cfg": "./infrastructure/deploy/haproxy/haproxy.cfg"
    }


def test_the_read_models_primary_streams_to_a_replica(compose: dict[str, Any]) -> None:
    primary = _service(compose, "read-db")
    assert "wal_level=replica" in _command(primary)
    init = _bind_mounts(primary)
    assert any(target.startswith("/docker-entrypoint-initdb.d/") for target in init)
    replica = _service(compose, "read-replica")
    assert _environment(replica)["PRIMARY_HOST"] == "read-db"
    entrypoint = " ".join(replica["entrypoint"])
    script = _bind_mounts(replica)[entrypoint.split()[-1]]
    assert "pg_basebackup" in (ROOT / script).read_text()
    assert "--write-recovery-conf" in (ROOT / script).read_text()
    assert replica["depends_on"]["read-db"]["condition"] == "service_healthy"


def test_migrate_runs_once_before_the_api_and_the_worker(compose: dict[str, Any]) -> None:
    for name in ("api", "worker"):
        depends = _service(compose, name)["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully", name
    migrate = _service(compose, "migrate")["depends_on"]
    for name in ("events-db", "read-db", "shard-0-db", "shard-1-db"):
        assert migrate[name]["condition"] == "service_healthy", name


def test_every_mounted_file_exists(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for target, source in _bind_mounts(service).items():
            assert (ROOT / source).exists(), f"{name}: {source} → {target}"
    entrypoint = _service(compose, "read-replica")["entrypoint"]
    assert entrypoint[-1] in _bind_mounts(_service(compose, "read-replica"))


def test_prometheus_scrapes_every_api_replica_and_the_worker(compose: dict[str, Any]) -> None:
    worker = _service(compose, "worker")
    port = _environment(worker)["SIGNUP_WORKER_METRICS_PORT"]
    assert port == "9464"
    mounts = _bind_mounts(_service(compose, "prometheus"))
    config = yaml.safe_load((ROOT / mounts["/etc/prometheus/prometheus.yml"]).read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    api = jobs["signup-api"]
    assert api.get("metrics_path", "/metrics") == "/metrics"
    # DNS service discovery: Docker answers `api` with one address per replica.
    assert api["dns_sd_configs"] == [
        {"names": ["api"], "type": "A", "port": 8000, "refresh_interval": "10s"}
    ]
    targets = [
        t for job in jobs.values() for c in job.get("static_configs", []) for t in c["targets"]
    ]
    assert f"worker:{port}" in targets


def test_grafana_has_the_prometheus_datasource_and_the_dashboard(compose: dict[str, Any]) -> None:
    mounts = _bind_mounts(_service(compose, "grafana"))
    provisioning = ROOT / mounts["/etc/grafana/provisioning"]
    datasources = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())
    (source,) = datasources["datasources"]
    assert (source["type"], source["url"]) == ("prometheus", "http://prometheus:9090")
    providers = yaml.safe_load((provisioning / "dashboards" / "signup.yml").read_text())
    (provider,) = providers["providers"]
    assert provider["options"]["path"] == "/etc/grafana/dashboards"
    assert ROOT / mounts["/etc/grafana/dashboards"] == DASHBOARD.parent

    dashboard = json.loads(DASHBOARD.read_text())
    uids = {p["datasource"]["uid"] for p in dashboard["panels"] if "datasource" in p}
    assert uids == {source["uid"]}
    expressions = "\n".join(_dashboard_expressions())
    for wanted in (
        "rate(signup_registrations_recorded_total",
        "rate(signup_http_requests_total",
        "histogram_quantile(0.50, sum by (le) (rate(signup_http_request_duration_seconds_bucket",
        "histogram_quantile(0.99, sum by (le) (rate(signup_http_request_duration_seconds_bucket",
        "signup_event_store_batch_size_bucket",
        "signup_projection_lag_events",
        'signup_projection_failures{state="dead"}',
    ):
        assert wanted in expressions, wanted


def _dashboard_expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


# ── The mounted configurations, where their own checkers are installed ───────────────────────


@pytest.mark.skipif(
    shutil.which("haproxy") is None,
    reason="haproxy is not installed: `make test-tools` (as root) installs it",
)
def test_haproxy_accepts_its_configuration(tmp_path: Path) -> None:
    # With a certificate where the compose file mounts one.
    certificate = tmp_path / "signup.pem"
    make_certificate(certificate)
    config = tmp_path / "haproxy.cfg"
    shipped = (DEPLOY / "haproxy" / "haproxy.cfg").read_text()
    config.write_text(shipped.replace(CERTIFICATE_IN_LB, str(certificate)))
    answer = subprocess.run(
        ["haproxy", "-c", "-f", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "SIGNUP_HTTPS_PORT": "443"},
    )
    assert answer.returncode == 0, answer.stdout + answer.stderr


@pytest.mark.skipif(
    shutil.which("promtool") is None,
    reason="promtool is not installed: `make test-tools` (as root) installs it",
)
def test_prometheus_accepts_its_configuration_and_the_dashboard_queries(tmp_path: Path) -> None:
    config = subprocess.run(
        ["promtool", "check", "config", str(DEPLOY / "prometheus" / "prometheus.yml")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert config.returncode == 0, config.stdout + config.stderr
    # promtool parses PromQL only in rule files: one recording rule per dashboard query.
    rules = [
        {"record": f"dashboard:query{n}", "expr": expr.replace("$__rate_interval", "1m")}
        for n, expr in enumerate(_dashboard_expressions())
    ]
    rule_file = tmp_path / "dashboard-rules.yml"
    rule_file.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    queries = subprocess.run(
        ["promtool", "check", "rules", str(rule_file)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert queries.returncode == 0, queries.stdout + queries.stderr


def test_redis_is_bounded_and_evicts_the_least_used_keys_not_the_rate_limits_first(
    compose: dict[str, Any],
) -> None:
    command = _command(_service(compose, "redis"))
    settings = dict(zip(command[1::2], command[2::2], strict=True))
    assert settings["--maxmemory"] == "1gb"
    assert settings["--maxmemory-policy"] == "allkeys-lfu"


def test_the_load_balancer_serves_https_with_the_certificate_the_certs_service_makes(
    compose: dict[str, Any],
) -> None:
    lb, certs = _service(compose, "lb"), _service(compose, "certs")
    assert lb["depends_on"]["certs"]["condition"] == "service_completed_successfully"
    made_in = next(v for v in certs["volumes"] if v.endswith(":/certs"))
    read_from = next(v for v in lb["volumes"] if ":/usr/local/etc/haproxy/certs" in v)
    assert made_in.split(":")[0] == read_from.split(":")[0]  # the same volume
    assert read_from.endswith(":ro")
    published = {p.split(":")[-1]: p.split(":")[0] for p in lb["ports"]}
    assert set(published) == {"80", "443"}
    # The redirect from HTTP names the port HTTPS is published on.
    assert _environment(lb)["SIGNUP_HTTPS_PORT"] == published["443"]
    assert _command(certs)[-1] == "/certs/signup.pem"


# ── The image ─────────────────────────────────────────────────────────────────────────────


def _stages(dockerfile: str) -> list[list[str]]:
    """The Dockerfile's instructions, continuation lines joined, split into its stages."""
    lines = re.sub(r"\\\n\s*", " ", dockerfile).splitlines()
    stages: list[list[str]] = []
    for line in (line.strip() for line in lines):
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            stages.append([])
        stages[-1].append(line)
    return stages


@needs_compose
def test_every_signup_service_runs_the_image_built_from_the_dockerfile(
    compose: dict[str, Any],
) -> None:
    for name in (*SIGNUP_SERVICES, "certs"):
        service = _service(compose, name)
        build = service["build"]
        context = build if isinstance(build, str) else build["context"]
        assert (ROOT / context).resolve() == ROOT, name
        assert service["image"].startswith("signup:"), name
    assert "volumes" not in _service(compose, "api")  # nothing installed into a volume


def test_the_image_installs_every_package_of_the_service_and_runs_it_unprivileged() -> None:
    build, final = _stages((ROOT / "Dockerfile").read_text())
    copied = {line.split()[1] for line in build if line.startswith("COPY ")}
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["hatch"]["build"][
        "targets"
    ]["wheel"]["packages"]
    assert set(packages) <= copied, "a package of the wheel is not copied into the image"
    assert "uv.lock" in " ".join(line for line in build if line.startswith("COPY "))
    assert any("--frozen" in line and "--no-dev" in line for line in build if "uv sync" in line)
    # The final stage: the environment alone, no installer, and a user that is not root.
    assert not [line for line in final if line.startswith("RUN ") and "useradd" not in line]
    assert [line for line in final if line.startswith("COPY ")] == [
        "COPY --from=build /opt/signup /opt/signup"
    ]
    user = next(line.split()[1] for line in final if line.startswith("USER "))
    assert user not in ("root", "0")
