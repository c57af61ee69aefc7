"""README: "`--out` is a file named `.png`, `.webp` or `.jpg`/`.jpeg`, written in that format (several images:
`fox-1.png`, `fox-2.png`, …), or a folder" and "with the sampler by its usual name (`Sampler: DPM++ 2M Karras`,
`Euler a`, `PNDM`, …; `scheduler: default` is recorded as the model's own scheduler)". Run in-process
(``cli.main``) to stay quick."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from PIL import Image

from generation import cli
from generation.imagefiles import read_parameters
from generation.samplers import SAMPLER_NAMES, sampler_name, sampler_of


@pytest.fixture(autouse=True)
def _in_an_empty_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no ./config.yaml: the built-in config, builtin:tiny
    for key in [key for key in os.environ if key.startswith("IMAGINE_")]:
        monkeypatch.delenv(key)


def generate(out: str, *more: str) -> int:
    return cli.main(["a red fox", "--size", "64x64", "--steps", "2", "--seed", "7", "--out", out, *more])


@pytest.mark.parametrize("name, fmt", [("fox.png", "PNG"), ("fox.webp", "WEBP"), ("fox.jpg", "JPEG"),
                                       ("fox.JPEG", "JPEG")])
def test_a_file_name_is_written_in_its_format_with_its_parameters(tmp_path: Path, name: str, fmt: str) -> None:
    assert generate(name) == 0
    assert not (tmp_path / name).is_dir()  # `--out x.jpg` once made a folder named x.jpg
    data = (tmp_path / name).read_bytes()
    with Image.open(tmp_path / name) as image:
        assert image.format == fmt and image.size == (64, 64)
    parameters = read_parameters(data)
    assert parameters is not None and parameters.startswith("a red fox\nSteps: 2, Sampler: PNDM, ")


def test_several_images_are_numbered_before_the_suffix(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert generate("shots/fox.webp", "--count", "2") == 0
    assert sorted(path.name for path in (tmp_path / "shots").iterdir()) == ["fox-1.webp", "fox-2.webp"]
    with Image.open(tmp_path / "shots" / "fox-2.webp") as image:
        assert image.format == "WEBP"
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith(f"{Path('shots/fox-1.webp')}  seed 7") and "seed 8" in printed[1]


@pytest.mark.parametrize("out", ["renders", "renders/"])
def test_a_name_without_an_image_suffix_is_a_folder(tmp_path: Path, out: str) -> None:
    assert generate(out, "--count", "2") == 0
    assert sorted(path.name for path in (tmp_path / "renders").iterdir()) == ["imagine-7.png", "imagine-8.png"]


def test_an_existing_folder_stays_a_folder_whatever_its_name(tmp_path: Path) -> None:
    (tmp_path / "old.png").mkdir()  # made by the CLI before --out took file names
    assert generate("old.png") == 0
    assert [path.name for path in (tmp_path / "old.png").iterdir()] == ["imagine-7.png"]


@pytest.mark.parametrize("out, says", [
    ("fox.gif", "--out fox.gif: .gif files cannot be written; allowed: a .png, .webp, .jpg or .jpeg file, or a folder"),
    ("notes.txt", "--out notes.txt is an existing file, not a folder; allowed: a .png, .webp, .jpg or .jpeg file"),
])
def test_an_out_that_cannot_be_written_as_asked_exits_2_before_any_work(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], out: str, says: str) -> None:
    (tmp_path / "notes.txt").write_text("keep me")
    assert generate(out) == cli.EXIT_BAD_INPUT
    assert says in capsys.readouterr().err
    assert (tmp_path / "notes.txt").read_text() == "keep me" and not (tmp_path / "fox.gif").exists()


def test_every_configured_scheduler_has_its_a1111_name() -> None:
    assert {name: sampler_name(name) for name in SAMPLER_NAMES} == {
        "euler": "Euler", "euler_a": "Euler a", "dpmpp_2m": "DPM++ 2M", "dpmpp_2m_karras": "DPM++ 2M Karras",
        "ddim": "DDIM", "pndm": "PNDM", "lcm": "LCM", "unipc": "UniPC"}


@pytest.mark.parametrize("class_name, config, expected", [
    ("PNDMScheduler", {"skip_prk_steps": True}, "PNDM"),
    ("EulerDiscreteScheduler", {}, "Euler"),
    ("EulerAncestralDiscreteScheduler", {}, "Euler a"),
    ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}, "DPM++ 2M"),
    ("DPMSolverMultistepScheduler", {"solver_order": 2, "use_karras_sigmas": True}, "DPM++ 2M Karras"),
    ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++", "solver_order": 2}, "DPM++ 2M SDE"),
    ("DDIMScheduler", {}, "DDIM"), ("LCMScheduler", {}, "LCM"), ("UniPCMultistepScheduler", {}, "UniPC"),
    ("FlowMatchEulerDiscreteScheduler", {}, "FlowMatchEulerDiscrete"),  # unknown: its own name, never "default"
])
def test_default_is_named_after_the_models_own_scheduler(class_name: str, config: dict[str, object],
                                                         expected: str) -> None:
    model_sampler = sampler_of(class_name, config)
    assert model_sampler == expected
    assert sampler_name("default", model_sampler) == expected and sampler_name(None, model_sampler) == expected


@pytest.mark.parametrize("scheduler, expected", [("default", "PNDM"), ("dpmpp_2m_karras", "DPM++ 2M Karras"),
                                                 ("euler_a", "Euler a")])
def test_the_cli_records_the_scheduler_that_ran(tmp_path: Path, scheduler: str, expected: str) -> None:
    """The tiny model ships PNDM: ``default`` is recorded as PNDM, never as "default"."""
    extra = () if scheduler == "default" else ("--scheduler", scheduler)
    assert generate("fox.png", *extra) == 0
    parameters = read_parameters((tmp_path / "fox.png").read_bytes()) or ""
    assert f"Sampler: {expected}," in parameters and "default" not in parameters
