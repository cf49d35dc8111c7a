"""What Prometheus and Grafana users get (issue 25, point 10): the alerting rules in
packaging/prometheus/ pass `promtool check rules` and their own unit tests (`promtool
test rules`); /metrics passes `promtool check metrics`; every expression of the rules
and of packaging/grafana/veylor.json names only metrics Veylor exports; and a real
Prometheus server, on loopback, scrapes a running Veylor and answers queries on it.
Debian's `prometheus` package gives promtool and the server (.ci/run installs it)."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import textwrap
import time
from pathlib import Path

import pytest
import yaml
from helpers import VeylorProcess, free_port, veylor_inprocess

from veylor.observe.metrics import render
from veylor.observe.state import snapshot

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "packaging" / "prometheus" / "veylor.rules.yml"
DASHBOARD = ROOT / "packaging" / "grafana" / "veylor.json"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool is not installed (apt install prometheus)"
)

# Every kind, so that every family a kind adds is there (NATS ones without a server).
EVERY_KIND = """
sources:
  up: {{url: "ws://127.0.0.1:9/"}}
  bus: {{nats: {{servers: ["nats://127.0.0.1:9"], subject: a}}}}
endpoints:
  ws: {{websocket: {{host: 127.0.0.1, port: {port}, path: /}}}}
  out: {{nats: {{servers: ["nats://127.0.0.1:9"], subject: b}}}}
routes:
  r: {{from: up, to: [ws, out]}}
  b: {{from: bus, to: ws}}
"""


async def exported(tmp_path: Path) -> str:
    """The /metrics text of a running Veylor with every kind."""
    async with veylor_inprocess(tmp_path, EVERY_KIND.format(port=free_port())) as rt:
        return render(snapshot(rt), ready=True)


def names_in(expr: str) -> set[str]:
    """The metric names an expression reads (Veylor's and process_*)."""
    return set(re.findall(r"\b((?:veylor|process)_[a-z0-9_]+)\b", expr))


def expressions() -> dict[str, str]:
    """Every expression of the rules and of the dashboard, by where it is."""
    out = {}
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            out[f"rule {rule['alert']}"] = rule["expr"]
            for key, text in rule.get("annotations", {}).items():
                out[f"rule {rule['alert']} {key}"] = text
    dashboard = json.loads(DASHBOARD.read_text())
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            out[f"panel {panel['title']!r} {target['refId']}"] = target["expr"]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            out[f"variable {variable['name']}"] = variable["query"]
    return out


async def test_every_expression_names_only_metrics_veylor_exports(tmp_path: Path) -> None:
    text = await exported(tmp_path)
    families = set(re.findall(r"^# TYPE (\S+) ", text, re.M))
    wrong = {where: sorted(names_in(expr) - families) for where, expr in expressions().items()}
    assert not {k: v for k, v in wrong.items() if v}, wrong
    # the rules and the dashboard cover what an operator asks first
    used = set().union(*(names_in(e) for e in expressions().values()))
    assert {
        "veylor_source_up",
        "veylor_endpoint_undelivered_total",
        "veylor_endpoint_slow_clients",
        "veylor_config_last_reload_successful",
        "veylor_ready",
        "veylor_laggard_buffered_bytes",
        "process_resident_memory_bytes",
    } <= used


@needs_promtool
def test_the_rules_check_and_pass_their_unit_tests() -> None:
    checked = subprocess.run(
        [PROMTOOL, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = subprocess.run(
        [PROMTOOL, "test", "rules", "veylor.rules.test.yml"],
        cwd=RULES.parent,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert tested.returncode == 0 and "SUCCESS" in tested.stdout, tested.stdout + tested.stderr


@needs_promtool
async def test_metrics_pass_promtool_check_metrics(tmp_path: Path) -> None:
    text = await exported(tmp_path)
    linted = subprocess.run(
        [PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    assert linted.returncode == 0, linted.stdout + linted.stderr


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("prometheus") is None, reason="prometheus is not installed")
async def test_a_real_prometheus_scrapes_veylor_and_answers_queries(tmp_path: Path) -> None:
    import aiohttp

    admin, prom = free_port(), free_port()
    main = tmp_path / "config.yaml"
    main.write_text(
        f'admin: {{listen: "127.0.0.1:{admin}"}}\n' + textwrap.dedent(EVERY_KIND.format(port=free_port()))
    )
    (tmp_path / "prometheus.yml").write_text(
        textwrap.dedent(
            f"""
            global: {{scrape_interval: 1s, evaluation_interval: 1s}}
            rule_files: ["{RULES}"]
            scrape_configs:
              - job_name: veylor
                static_configs: [{{targets: ["127.0.0.1:{admin}"]}}]
            """
        )
    )
    veylor = await VeylorProcess("-c", str(main), "--no-watch").start()
    server = subprocess.Popen(
        [
            "prometheus",
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{prom}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        found: dict[str, list] = {}
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
            while time.monotonic() < deadline and len(found) < 3:
                for query in ("veylor_ready", 'veylor_source_up{source="up"}', "process_open_fds"):
                    try:
                        async with session.get(
                            f"http://127.0.0.1:{prom}/api/v1/query", params={"query": query}
                        ) as r:
                            result = (await r.json())["data"]["result"]
                    except (aiohttp.ClientError, KeyError, ValueError):
                        result = []
                    if result:
                        found[query] = result
                await asyncio.sleep(0.5)
            rules = await (await session.get(f"http://127.0.0.1:{prom}/api/v1/rules")).json()
        assert len(found) == 3, f"Prometheus found only {sorted(found)}"
        assert found["veylor_ready"][0]["value"][1] == "1"
        assert found['veylor_source_up{source="up"}'][0]["metric"]["job"] == "veylor"
        loaded = {rule["name"] for group in rules["data"]["groups"] for rule in group["rules"]}
        assert {"VeylorSourceDown", "VeylorNoReadyInstance"} <= loaded
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
        await veylor.stop()
