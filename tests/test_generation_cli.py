"""``python -m generation`` as a user runs it: a subprocess, offline."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parent.parent


def run_cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {key: value for key, value in os.environ.items() if not key.startswith("IMAGINE_")}
    environment.update(HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO))
    environment.update(env or {})
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
    # The progress bar counts the 3 steps asked for (PNDM's extra warm-up step once showed "step 4/4").
    assert "step 3/3" in done.stderr and "step 4" not in done.stderr
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


PIXIE_CONFIG = (
    "models:\n  default: other\n  other:\n    source: builtin:tiny\n"
    "  pixie:\n    source: builtin:tiny\n    default_width: 96\n    default_height: 64\n"
)


def _input_png(path: Path) -> Path:
    Image.new("RGB", (128, 96), (200, 40, 30)).save(path, format="PNG")
    return path


def test_cli_init_and_strength_repaint_an_input_image(tmp_path: Path) -> None:
    """README: "--init IMG --strength F"; "Saved images carry their parameters in the PNG `parameters` text
    chunk." An input PNG is repainted at the requested size, strength 0.5 of 4 steps runs 2 denoising steps,
    and the file records "Denoising strength: 0.5"."""
    init = _input_png(tmp_path / "input.png")
    done = run_cli(
        "a red fox in snow", "--init", str(init), "--strength", "0.5", "--steps", "4", "--size", "64x64",
        "--scheduler", "euler", "--seed", "3", "--out", str(tmp_path / "fox.png"), cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert "step 2/2" in done.stderr and "/4" not in done.stderr  # strength x steps denoising steps
    assert done.stdout.startswith(f"{tmp_path / 'fox.png'}  seed 3  load ")
    with Image.open(tmp_path / "fox.png") as image:
        assert image.format == "PNG" and image.size == (64, 64)  # the requested size, not the input's 128x96
        parameters = image.text["parameters"]
    assert parameters.splitlines()[0] == "a red fox in snow"
    assert "Steps: 4" in parameters and "Size: 64x64" in parameters and "Model: tiny" in parameters
    assert parameters.endswith(", Denoising strength: 0.5")


def test_cli_model_scheduler_and_guidance_are_used_and_recorded(tmp_path: Path) -> None:
    """README: "--model NAME|SOURCE ... --guidance G ... --scheduler NAME ... --config PATH". A model named in
    the config file is selected over its default (its own default size applies), and the chosen scheduler and
    guidance are recorded as "Sampler" (in A1111's words) and "CFG scale"; a text-to-image file has no
    "Denoising strength"."""
    config = tmp_path / "config.yaml"
    config.write_text(PIXIE_CONFIG)
    done = run_cli(
        "a lighthouse", "--config", str(config), "--model", "pixie", "--scheduler", "euler_a", "--guidance", "3.5",
        "--steps", "2", "--seed", "5", "--out", str(tmp_path / "light.png"), cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    with Image.open(tmp_path / "light.png") as image:
        assert image.format == "PNG" and image.size == (96, 64)  # pixie's default size, not other's 64x64
        parameters = image.text["parameters"]
    assert parameters == (
        "a lighthouse\nSteps: 2, Sampler: Euler a, CFG scale: 3.5, Seed: 5, Size: 96x64, Model: pixie"
    )


def test_cli_strength_problems_exit_2_naming_strength(tmp_path: Path) -> None:
    """README: "bad input prints one line and exits with code 2." --strength needs --init, and must lie in
    0.05 to 1 (the --help text); nothing is written either way."""
    alone = run_cli("fox", "--strength", "0.5", cwd=tmp_path)
    assert alone.returncode == 2
    assert alone.stderr == (
        "error: strength is only used with an input image; attach an image or leave strength out\n"
    )
    init = _input_png(tmp_path / "input.png")
    too_much = run_cli("fox", "--init", str(init), "--strength", "1.5", cwd=tmp_path)
    assert too_much.returncode == 2
    assert too_much.stderr == "error: strength 1.5 is out of range; allowed: 0.05 to 1\n"
    assert not (tmp_path / "out").exists()


def test_cli_unknown_scheduler_or_model_exits_2_naming_the_allowed_ones(tmp_path: Path) -> None:
    """README: "bad input prints one line and exits with code 2." An unknown --scheduler is refused with the
    valid choices listed; an unknown --model names the models the config file defines."""
    scheduler = run_cli("fox", "--scheduler", "warp", cwd=tmp_path)
    assert scheduler.returncode == 2
    lines = scheduler.stderr.strip().splitlines()
    assert len(lines) == 1 and "argument --scheduler: invalid choice: 'warp'" in lines[0]
    assert all(name in lines[0] for name in ("euler_a", "dpmpp_2m_karras", "ddim", "lcm", "unipc"))
    config = tmp_path / "config.yaml"
    config.write_text(PIXIE_CONFIG)
    model = run_cli("fox", "--config", str(config), "--model", "nope", cwd=tmp_path)
    assert model.returncode == 2
    assert model.stderr == "error: unknown model 'nope'; configured models: other, pixie\n"
    assert not (tmp_path / "out").exists()


def test_cli_init_that_is_not_an_image_exits_2_naming_the_file(tmp_path: Path) -> None:
    """CLI: exit code 2 for a bad input image, with one line naming the file and the accepted formats."""
    notes = tmp_path / "notes.png"
    notes.write_text("not a picture\n")
    done = run_cli("fox", "--init", str(notes), cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr == f"error: input image {notes} is not an image; allowed: PNG, JPEG or WebP\n"
    assert not (tmp_path / "out").exists()


def test_cli_damaged_huge_or_missing_input_images_exit_2_before_the_model_loads(tmp_path: Path) -> None:
    """CLI docstring: "2 bad input (arguments, config file, request fields, input image)". A PNG cut
    short, one with a corrupt data chunk, one over 4096 px a side, and a missing file all exit 2 with
    one line, and no model is loaded for them (each run is quick and writes nothing)."""
    whole = io.BytesIO()
    Image.new("RGB", (64, 64), "teal").save(whole, format="PNG")
    data = whole.getvalue()
    cut = tmp_path / "cut.png"
    cut.write_bytes(data[: len(data) // 2])
    idat = data.index(b"IDAT") + 8
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(data[:idat] + bytes(byte ^ 0xFF for byte in data[idat: idat + 16]) + data[idat + 16:])
    huge = tmp_path / "huge.png"
    Image.new("1", (5000, 8)).save(huge, format="PNG")
    missing = tmp_path / "missing.png"
    expected = {
        cut: "is damaged and cannot be decoded", corrupt: "is damaged and cannot be decoded",
        huge: "is 5000x8; allowed: at most 4096 pixels on each side", missing: "cannot be read (No such file",
    }
    for path, reason in expected.items():
        done = run_cli("fox", "--init", str(path), cwd=tmp_path)
        assert done.returncode == 2, (path, done.stderr)
        assert done.stderr.startswith(f"error: input image {path} {reason}") and done.stderr.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_cli_init_takes_only_png_jpeg_or_webp(tmp_path: Path) -> None:
    """CLI: ``--init`` reads PNG, JPEG or WebP. A real TIFF, an EPS (Pillow would run Ghostscript on it) and
    a PSD exit 2 with one line naming the file, what it is and what is allowed; a JPEG and a WebP work."""
    scan = tmp_path / "scan.tif"
    Image.new("RGB", (64, 64), "olive").save(scan, format="TIFF")
    eps = tmp_path / "logo.eps"
    eps.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 64 64\n%%EndComments\nshowpage\n%%EOF\n")
    psd = tmp_path / "layers.png"  # the name does not matter: the bytes do
    psd.write_bytes(b"8BPS\x00\x01" + bytes(6) + b"\x00\x03\x00\x00\x00\x40\x00\x00\x00\x40\x00\x08\x00\x03")
    for path, kind in ((scan, "a TIFF image"), (eps, "an EPS/PostScript file"), (psd, "a Photoshop (PSD) file")):
        done = run_cli("fox", "--init", str(path), cwd=tmp_path)
        assert done.returncode == 2, (path, done.stderr)
        assert done.stderr == f"error: input image {path} is {kind}; allowed: PNG, JPEG or WebP\n"
    assert not (tmp_path / "out").exists()
    for fmt in ("JPEG", "WEBP"):
        source = tmp_path / f"input.{fmt.lower()}"
        Image.new("RGB", (64, 64), "teal").save(source, format=fmt)
        done = run_cli("fox", "--init", str(source), "--strength", "0.5", "--steps", "2", "--size", "64x64",
                       "--out", str(tmp_path / f"{fmt}.png"), cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        assert (tmp_path / f"{fmt}.png").exists()


def _closed_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])  # closed again when the block ends: nothing listens there


def test_the_shipped_default_model_without_network_is_one_line_and_exit_2(tmp_path: Path) -> None:
    """Issue: "`python -m generation "a photo of an astronaut riding a horse on mars" --model sd15` on a machine
    without network prints one clear line and exits 2. It does not print a traceback." Run from the project
    folder, so the shipped ./config.yaml names sd15; the cache is empty and the hub cannot be reached."""
    prompt = "a photo of an astronaut riding a horse on mars"
    for offline, endpoint in (("1", "http://127.0.0.1:9"), ("0", f"http://127.0.0.1:{_closed_port()}")):
        done = run_cli(prompt, "--model", "sd15", "--out", str(tmp_path / "out"), cwd=REPO,
                       env={"HF_HUB_OFFLINE": offline, "HF_ENDPOINT": endpoint, "HF_HOME": str(tmp_path / "hf")})
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2 and len(lines) == 1, done.stderr
        assert lines[0].startswith("error: model sd15: cannot reach the model hub at ")
        assert f"(HF_HUB_OFFLINE is {'set' if offline == '1' else 'not set'})" in lines[0]
        assert "hub repo 'stable-diffusion-v1-5/stable-diffusion-v1-5'" in lines[0]
    assert not (tmp_path / "out").exists()
