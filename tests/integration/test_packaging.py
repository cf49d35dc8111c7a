"""`pip install .` ships the schema inside the wheel, and the installed package finds it;
the wheel's data holds the man page and the shell completions."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = {  # where under the prefix: the file in this tree (packaging/gen_cli_files.py writes them)
    "share/man/man1/veylor.1": "packaging/man/veylor.1",
    "share/bash-completion/completions/veylor": "packaging/completions/veylor.bash",
    "share/zsh/site-functions/_veylor": "packaging/completions/_veylor",
    "share/fish/vendor_completions.d/veylor.fish": "packaging/completions/veylor.fish",
}


def test_wheel_contains_the_schema_and_loads_it_from_there(tmp_path):
    # Build the wheel the way `pip install .` does (the backend is in the test extras).
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(REPO),
        ],
        check=True,
        timeout=120,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("veylor-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        assert "veylor/schema/veylor.schema.json" in names
        assert "veylor/cli.py" in names
        assert not any(n.startswith("tests/") for n in names)
        # The man page and the shell completions, as data installed under the prefix
        # (/opt/veylor/share/...), each the committed file generated from the parser.
        (dist_info,) = {n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA")}
        data = dist_info.removesuffix(".dist-info") + ".data/data/"
        for installed, committed in SHARED_DATA.items():
            assert data + installed in names, installed
            assert zf.read(data + installed) == (REPO / committed).read_bytes(), installed
        zf.extractall(tmp_path / "site")
    # Import veylor from the unpacked wheel alone: the schema must come from inside it.
    (tmp_path / "config.yaml").write_text(
        "sources: {s: {url: 'ws://127.0.0.1:9/'}}\nendpoints: {e: {websocket: {port: 9001}}}\n"
        "routes: {r: {from: s, to: e}}\n"
    )
    code = (
        "import veylor.config as c, sys; p = c.schema_path(); "
        "assert str(p).startswith(sys.argv[1]), p; "
        "print(len(c.load_config('config.yaml').routes))"
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "site")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "1"


def test_top_level_schema_is_the_one_documented():
    import json

    schema = json.loads((REPO / "schema" / "veylor.schema.json").read_text())
    assert schema["$schema"].endswith("2020-12/schema")
    # Every v1 key that config.yaml.example documents exists in the schema.
    example = (REPO / "config.yaml.example").read_text()
    for key in schema["$defs"]["source"]["properties"]:
        assert f"{key}:" in example, key
    for key in schema["$defs"]["endpoint"]["properties"]:
        assert f"{key}:" in example, key
