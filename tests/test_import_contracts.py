"""The layering contracts in pyproject.toml: kept by the tree as it is, broken by a forbidden import.

Each case copies bot/ and generation/ to a temporary folder, adds one forbidden import, and runs
``lint-imports`` there as ``make test`` does: the run must fail and name the contract.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")

pytestmark = pytest.mark.skipif(not LINT_IMPORTS.exists(),
                                reason="import-linter is not installed (make test installs it)")


def lint(tree: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run([str(LINT_IMPORTS), "--no-cache", "--no-logo"], cwd=tree, env=env, capture_output=True,
                          text=True, timeout=120, check=False)


def copy_tree(tmp_path: Path) -> Path:
    ignore = shutil.ignore_patterns("__pycache__")
    for package in ("bot", "generation"):
        shutil.copytree(ROOT / package, tmp_path / package, ignore=ignore)
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def add_import(tree: Path, module: str, line: str) -> None:
    path = tree / module
    text = path.read_text()
    head, sep, rest = text.partition("from __future__ import annotations\n")
    path.write_text(head + sep + line + "\n" + rest)


def test_the_tree_keeps_every_contract(tmp_path: Path) -> None:
    result = lint(copy_tree(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(("module", "line", "contract"), [
    ("generation/request.py", "import bot.core.text", "generation never imports bot or discord"),
    ("bot/core/text.py", "import discord", "bot.core, bot.scheduler and bot.storage import neither discord nor torch"),
    ("bot/scheduler/limits.py", "import bot.storage", "bot.scheduler imports bot.core only of the bot"),
    ("bot/features/info/cog.py", "import bot.features.imagine.service", "features do not import each other"),
    ("bot/features/contests/service.py", "import discord",
     "the contests feature keeps its rules, tables and tally free of discord"),
    ("bot/features/imagine/service.py", "import torch", "bot talks to generation only through its torch-free modules"),
    ("bot/discord_ui/presenter.py", "import generation.runner",
     "bot talks to generation only through its torch-free modules"),
    ("bot/observability/runtime.py", "import torch", "bot.observability imports neither discord nor torch"),
    ("bot/observability/health.py", "import bot.discord_ui.texts",
     "bot.observability imports neither discord nor torch"),
    ("bot/services.py", "import generation.remote.worker",
     "bot talks to generation only through its torch-free modules"),
    ("generation/remote/pool.py", "import generation.runner", "the bot's side of generation.remote is torch-free"),
    ("bot/scheduler/core.py", "import redis", "Redis and SAQ are reached only through generation.remote"),
])
def test_a_forbidden_import_breaks_its_contract(tmp_path: Path, module: str, line: str, contract: str) -> None:
    tree = copy_tree(tmp_path)
    add_import(tree, module, line)
    result = lint(tree)
    assert result.returncode != 0
    assert f"{contract} BROKEN" in result.stdout, result.stdout
