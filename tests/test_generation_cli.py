"""``python -m generation`` as a user runs it: a subprocess, offline."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parent.parent


def run_cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {key: value for key, value in os.environ.items() if not key.startswith("IMAGINE_")}
    environment.update(HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO), **(env or {}))
    return subprocess.run(
        [sys.executable, "-m", "generation", *args],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_cli_writes_pngs_carrying_their_parameters(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        "models:\n  default: other\n  other:\n    source: builtin:tiny\n"
        "  pixie:\n    source: builtin:tiny\n    default_steps: 3\n"
        "    default_width: 64\n    default_height: 64\n"
    )
    done = run_cli(
        "a red fox in snow",
        "--negative",
        "blurry",
        "--size",
        "96x64",
        "--seed",
        "7",
        "--count",
        "2",
        "--out",
        str(tmp_path / "fox.png"),
        cwd=tmp_path,
        env={"IMAGINE_CONFIG": str(config), "IMAGINE_MODEL": "pixie"},
    )
    assert done.returncode == 0, done.stderr
    assert "step 4/4" in done.stderr  # the progress bar (PNDM runs one warm-up step more)
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 2 and "seed 7" in lines[0] and "seed 8" in lines[1] and "denoise" in lines[0]
    with Image.open(tmp_path / "fox-2.png") as image:
        assert image.format == "PNG" and image.size == (96, 64)
        parameters = image.text["parameters"]
    assert parameters.splitlines()[0] == "a red fox in snow"
    assert "Negative prompt: blurry" in parameters
    assert "Seed: 8" in parameters and "Size: 96x64" in parameters and "Model: pixie" in parameters


def test_cli_bad_input_is_one_line_and_exit_code_2(tmp_path: Path) -> None:
    done = run_cli("fox", "--size", "100x64", "--steps", "500", cwd=tmp_path)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "width 100" in lines[0] and "multiples of 8" in lines[0] and "steps 500" in lines[0]
    assert not (tmp_path / "out").exists()


def test_cli_config_problems_exit_2_naming_file_key_and_line(tmp_path: Path) -> None:
    missing = run_cli("fox", "--config", str(tmp_path / "nope.yaml"), cwd=tmp_path)
    assert missing.returncode == 2 and "nope.yaml does not exist" in missing.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("executor:\n  device: cpu\n  max_batch_images: 0\n")
    invalid = run_cli("fox", cwd=tmp_path, env={"IMAGINE_CONFIG": str(bad)})
    assert invalid.returncode == 2
    assert "executor.max_batch_images (line 3)" in invalid.stderr and len(invalid.stderr.strip().splitlines()) == 1
