"""Operating it (deploy/README.md, README "Install"): the systemd unit runs what `make run` runs, the documented
backup commands make a usable copy of a live database, TORCH_SPEC sticks, and the package installs offline
with an `imagine-bot` command that works from any folder."""

from __future__ import annotations

import asyncio
import re
import shlex
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from bot.__main__ import EXIT_USAGE, data_dir
from bot.storage import LATEST_VERSION, Storage
from tests.bot_harness import WAIT_S
from tests.test_bot_process import ROOT

UNIT = ROOT / "deploy" / "imagine.service"
DEPLOY_README = ROOT / "deploy" / "README.md"


def _unit() -> dict[str, list[str]]:
    """``Key=value`` lines of the unit; a key may repeat (Environment=)."""
    keys: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            keys.setdefault(key, []).append(value)
    return keys


def _make_variables() -> dict[str, str]:
    text = (ROOT / "Makefile").read_text()
    return dict(re.findall(r"^(\w+) :?= (.+)$", text, re.MULTILINE))


def _recipe(target: str) -> tuple[str, list[str]]:
    """The prerequisites and recipe lines of a Makefile target."""
    lines = (ROOT / "Makefile").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"{target}:"))
    recipe = []
    for line in lines[start + 1:]:
        if not line.startswith("\t"):
            break
        recipe.append(line.strip())
    return lines[start].partition(":")[2].strip(), recipe


def _expand(text: str, variables: dict[str, str]) -> str:
    for _ in range(3):
        text = re.sub(r"\$\((\w+)\)", lambda match: variables.get(match.group(1), match.group(0)), text)
    return text


def test_the_service_runs_what_make_run_runs_and_writes_where_the_bot_keeps_its_data() -> None:
    unit, variables = _unit(), _make_variables()
    folder = Path(unit["WorkingDirectory"][0])
    run_needs, run = _recipe("run")
    install_needs, _ = _recipe("install")
    assert run_needs == install_needs == "$(BIN)/.installed"  # `make install` is run's set-up step
    command = _expand(run[0], variables).split(" $(if")[0]  # without the optional CONFIG argument
    assert command == ".venv/bin/python -m bot"
    config = folder / "config.yaml"
    assert unit["ExecStart"] == [f"{folder}/{command} --config {config}"]
    assert unit["ReadWritePaths"] == [str(data_dir(config))]  # where that command keeps data/ for that config
    assert unit["User"] != ["root"] and unit["Restart"] == ["on-failure"]
    assert unit["RestartPreventExitStatus"] == [str(EXIT_USAGE)]  # a set-up mistake is not retried forever
    assert unit["ExecReload"] == ["/bin/kill -HUP $MAINPID"]  # the bot re-reads config.yaml on SIGHUP
    steps = DEPLOY_README.read_text()
    assert f"make -C {folder} install" in steps and f"mkdir -p {data_dir(config)}" in steps
    assert f"cp {folder}/deploy/imagine.service /etc/systemd/system/" in steps
    assert unit["EnvironmentFile"][0] in steps


def _documented(prefix: str) -> str:
    """The one command of deploy/README.md's shell blocks that starts with ``prefix``."""
    blocks = re.findall(r"```sh\n(.*?)```", DEPLOY_README.read_text(), re.DOTALL)
    found = [line for block in blocks for line in block.splitlines() if line.startswith(prefix)]
    assert len(found) == 1, found
    return found[0]


BACKUPS = [
    pytest.param("sqlite3 data/imagine.db", id="sqlite3-cli"),
    pytest.param(".venv/bin/python -c", id="python"),
]


@pytest.mark.parametrize("prefix", BACKUPS)
async def test_the_documented_backup_copies_a_live_database(tmp_path: Path, prefix: str) -> None:
    """deploy/README.md: "SQLite, while the bot runs ... SQLite's online backup makes one consistent file"."""
    command = _documented(prefix)
    if command.startswith("sqlite3") and shutil.which("sqlite3") is None:
        pytest.skip("the sqlite3 program is not installed here; the Python command is tested instead")
    argv = shlex.split(command)
    if argv[0] == ".venv/bin/python":
        argv[0] = sys.executable
    live = Storage(tmp_path / "data")
    await live.open()  # migrated and still open, as in a running bot: recent pages sit in imagine.db-wal
    try:
        assert (tmp_path / "data" / "imagine.db-wal").exists()
        backup = await asyncio.create_subprocess_exec(*argv, cwd=tmp_path)
        assert await asyncio.wait_for(backup.wait(), WAIT_S) == 0
    finally:
        await live.close()
    with sqlite3.connect(tmp_path / "backup.db") as copy:
        assert copy.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert max(version for (version,) in copy.execute("SELECT version FROM schema_version")) == LATEST_VERSION
    restored = tmp_path / "restored"
    restored.mkdir()
    shutil.copy(tmp_path / "backup.db", restored / "imagine.db")
    storage = Storage(restored)
    await storage.open()  # a restored copy opens with nothing left to migrate
    await storage.close()


def test_torch_comes_from_the_makefile_only_and_a_changed_spec_installs_it_again(tmp_path: Path) -> None:
    """README: "A changed `TORCH_SPEC` or `TORCH_INDEX_URL` installs torch again (the old build is removed
    first); the same ones again install nothing." The Makefile runs with a stand-in for python and pip that
    records what it is asked."""
    for name in ("requirements.txt", "requirements-dev.txt"):
        assert not [line for line in (ROOT / name).read_text().splitlines() if re.match(r"torch\b", line)], name
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    for name in ("Makefile", "requirements.txt", "requirements-dev.txt", "pyproject.toml"):
        shutil.copy(ROOT / name, tmp_path / name)
    stand_in = tmp_path / "python3"
    stand_in.write_text('#!/bin/sh\nmkdir -p .venv/bin\nfor tool in pip python; do\n'
                        '  printf \'#!/bin/sh\\necho "%s $*" >> calls.log\\n\' "$tool" > .venv/bin/$tool\n'
                        '  chmod +x .venv/bin/$tool\ndone\n')
    stand_in.chmod(0o755)

    def make(*settings: str) -> list[str]:
        subprocess.run(["make", "-s", f"PYTHON={stand_in}", *settings, "install"], cwd=tmp_path, check=True,
                       timeout=60, capture_output=True)
        log = tmp_path / "calls.log"
        calls = log.read_text().splitlines() if log.exists() else []
        log.unlink(missing_ok=True)
        return [call for call in calls if "torch" in call or "requirements.txt" in call]

    first = make()
    assert first == ["pip uninstall -qq -y torch", "pip install -q torch==2.13.0",
                     'pip install -q -r requirements.txt setuptools>=64']
    assert make() == []  # nothing changed: nothing installed
    index = "https://wheels.invalid/cu130"
    assert make("TORCH_SPEC=torch==2.12.0", f"TORCH_INDEX_URL={index}") == [
        "pip uninstall -qq -y torch", f"pip install -q --index-url {index} torch==2.12.0",
        "pip install -q -r requirements.txt setuptools>=64"]
    (tmp_path / "local.mk").write_text(f"TORCH_SPEC = torch==2.12.0\nTORCH_INDEX_URL = {index}\n")
    assert make() == []  # the machine's local.mk keeps the build that is installed


def test_the_package_installs_offline_and_imagine_bot_runs_from_any_folder(tmp_path: Path) -> None:
    """README: "`pip install -e .` in the project folder installs the packages `bot` and `generation` and the
    `imagine-bot` command", whose `--help` it runs; built here from a copy of the project, without the network
    (the build uses this environment's setuptools), and run from another folder."""
    source, target, elsewhere = tmp_path / "source", tmp_path / "site", tmp_path / "elsewhere"
    source.mkdir()
    elsewhere.mkdir()
    for name in ("pyproject.toml", "README.md", "requirements.txt"):
        shutil.copy(ROOT / name, source / name)
    for package in ("bot", "generation"):
        shutil.copytree(ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--no-index", "--target", str(target), str(source)], check=True, timeout=300,
                   capture_output=True)
    packages = {str(path.parent.relative_to(ROOT)) for package in ("bot", "generation")
                for path in (ROOT / package).rglob("__init__.py")}
    assert {str(path.parent.relative_to(target)) for path in target.rglob("__init__.py")} == packages
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(target), "HOME": str(tmp_path)}
    assert ".venv/bin/imagine-bot --help\n" in (ROOT / "README.md").read_text()
    done = subprocess.run([str(target / "bin" / "imagine-bot"), "--help"], cwd=elsewhere, env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: imagine-bot [-h] [--config CONFIG]") and "Run the /imagine" in done.stdout
