"""The safety checker in the generation core: diffusers' real ``StableDiffusionSafetyChecker`` built tiny, with
random weights and thresholds that make its verdict deterministic; run right after decode for the requests that
ask for it, each image alone; loaded once per runner from a builtin, a local folder or the model hub."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from generation.builtin import build_tiny_safety_checker
from generation.config import ExecutorConfig, GenerationConfig, ModelConfig
from generation.configfile import parse_yaml, validate_section
from generation.errors import ConfigError, ModelLoadError
from generation.request import GenerationRequest, GenerationResult, compatibility_key, validate
from generation.runner import Runner
from generation.safety import SafetyCheckers, checker_source, load_safety_checker
from tests.fake_hub import FakeHub, FakeRepo, go_offline, point_hub_at, read_folder

TINY = {"default_steps": 2, "default_width": 64, "default_height": 64, "max_width": 512, "max_height": 512}
CHECKER_REPO = "CompVis/stable-diffusion-safety-checker"


def runner_with(checker: str, *, source: str = "builtin:tiny", **model: Any) -> Runner:
    models = {"tiny": ModelConfig(source=source, **{**TINY, **model})}
    return Runner(GenerationConfig(models=models, executor=ExecutorConfig(
        device="cpu", preview_every_steps=0, safety_checker=checker)))


def ask(runner: Runner, prompt: str = "a red fox", **fields: Any) -> GenerationRequest:
    fields.setdefault("seed", 5)
    return validate(GenerationRequest(prompt=prompt, **fields), *runner.config.model("tiny"))


def results(runner: Runner, *requests: GenerationRequest) -> list[GenerationResult]:
    outcomes = runner.run(list(requests))
    assert all(isinstance(outcome, GenerationResult) for outcome in outcomes), outcomes
    return [outcome for outcome in outcomes if isinstance(outcome, GenerationResult)]


def saved_checker(folder: Path, *, flag_all: bool) -> Path:
    model, processor = build_tiny_safety_checker(flag_all=flag_all)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def test_a_flagging_checker_flags_every_image_and_leaves_the_pixels_as_made() -> None:
    runner = runner_with("builtin:tiny-flag-all")
    plain = runner_with("builtin:tiny")
    [flagged] = results(runner, ask(runner, count=2, check_safety=True))
    [clean] = results(plain, ask(plain, count=2, check_safety=True))
    assert flagged.nsfw == [True, True] and clean.nsfw == [False, False]
    # Diffusers' pipelines black a flagged image out; here it stays the image made (the bot decides what is shown).
    for made, reference in zip(flagged.images, clean.images, strict=True):
        assert np.array_equal(np.asarray(made), np.asarray(reference))
        assert np.asarray(made).std() > 5


def test_requests_that_do_not_ask_are_not_checked_and_share_a_batch_with_those_that_do() -> None:
    runner = runner_with("builtin:tiny-flag-all")
    unchecked = ask(runner, "a cat", seed=9)
    [only] = results(runner, unchecked)
    assert only.nsfw == []
    checked = ask(runner, "a dog", seed=11, count=2, check_safety=True)
    assert compatibility_key(checked) == compatibility_key(unchecked)  # one pipeline call for both
    first, second = results(runner, unchecked, checked)
    assert first.nsfw == [] and second.nsfw == [True, True]
    # The unchecked member's image is the one it makes alone (batching moves a pixel by a level or two at most).
    difference = np.abs(np.asarray(first.images[0]).astype(int) - np.asarray(only.images[0]).astype(int))
    assert difference.max() <= 2


def test_a_model_with_safety_checker_true_is_always_checked() -> None:
    runner = runner_with("builtin:tiny-flag-all", safety_checker=True)
    [result] = results(runner, ask(runner))
    assert result.nsfw == [True]


def test_builtin_models_are_judged_by_the_builtin_checker_so_nothing_downloads() -> None:
    # The default source is the hub repo; offline (as the suite runs) it could not load, yet a builtin
    # model's noise is checked, by builtin:tiny, and passes.
    assert ExecutorConfig().safety_checker == CHECKER_REPO
    runner = runner_with(CHECKER_REPO)
    [result] = results(runner, ask(runner, check_safety=True))
    assert result.nsfw == [False]
    assert checker_source(CHECKER_REPO, "builtin:tiny") == "builtin:tiny"
    assert checker_source("builtin:tiny-flag-all", "builtin:tiny") == "builtin:tiny-flag-all"
    assert checker_source(CHECKER_REPO, "owner/model") == CHECKER_REPO


def test_the_checker_loads_once_per_runner_whatever_the_model(tmp_path: Path) -> None:
    runner = runner_with("builtin:tiny-flag-all")
    checkers = runner.safety_checkers
    first = checkers.for_model(ModelConfig(source="builtin:tiny"))
    results(runner, ask(runner, check_safety=True), ask(runner, "a cat", check_safety=True))
    assert checkers.for_model(ModelConfig(source="builtin:tiny-xl", family="sdxl")) is first
    runner.close()
    assert checkers.for_model(ModelConfig(source="builtin:tiny")) is not first  # closed: loaded again on need


def test_a_local_folder_checker_judges_a_non_builtin_model(tmp_path: Path) -> None:
    from generation.builtin import build_builtin

    build_builtin("builtin:tiny").save_pretrained(tmp_path / "model")
    checker = saved_checker(tmp_path / "checker", flag_all=True)
    runner = runner_with(str(checker), source=str(tmp_path / "model"))
    [result] = results(runner, ask(runner, check_safety=True))
    assert result.nsfw == [True]


def test_a_checker_that_cannot_load_fails_only_the_requests_that_need_it(tmp_path: Path) -> None:
    from generation.builtin import build_builtin

    build_builtin("builtin:tiny").save_pretrained(tmp_path / "model")
    runner = runner_with(str(tmp_path / "no-checker-here"), source=str(tmp_path / "model"))
    needs, fine = runner.run([ask(runner, check_safety=True), ask(runner, "a cat")])
    assert isinstance(needs, ModelLoadError) and "safety checker" in str(needs)
    assert isinstance(fine, GenerationResult) and fine.nsfw == []


def test_unknown_builtin_checkers_are_refused_in_config() -> None:
    data, lines = parse_yaml("safety_checker: builtin:huge\n", "config.yaml")
    with pytest.raises(ConfigError, match="builtin:tiny, builtin:tiny-flag-all"):
        validate_section(ExecutorConfig, data, "config.yaml", lines)


def test_a_path_that_is_no_folder_nor_repo_id_says_so() -> None:
    with pytest.raises(ModelLoadError, match="neither an existing folder nor a hub repo id"):
        load_safety_checker("./missing/checker", ExecutorConfig(device="cpu"))


@pytest.fixture
def checker_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    files = read_folder(saved_checker(tmp_path / "saved", flag_all=True))
    # What the real repo also carries: other frameworks' weights and a pickled copy; only one set comes down.
    noise = {"flax_model.msgpack": b"flax", "tf_model.h5": b"tf", "pytorch_model.bin": b"pickle", "README.md": b"#"}
    with FakeHub([FakeRepo.of(CHECKER_REPO, {"main": {**files, **noise}})]) as fake:
        point_hub_at(monkeypatch, fake.endpoint, tmp_path / "hf-home")
        yield fake
    fake.assert_no_failures()


def test_the_default_checker_comes_through_the_hub_path_and_then_serves_offline(
    checker_hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub_model = ModelConfig(source="owner/model")
    progress: list[Any] = []
    cache = str(tmp_path / "weights")
    checker = SafetyCheckers(ExecutorConfig(device="cpu"), cache_dir=cache).for_model(hub_model, progress.append)
    assert checker.source == CHECKER_REPO and progress and progress[-1].fraction == 1.0
    assert downloaded(checker_hub) == {"config.json", "preprocessor_config.json", "model.safetensors"}
    go_offline(monkeypatch)
    again = SafetyCheckers(ExecutorConfig(device="cpu"), cache_dir=cache).for_model(hub_model)
    images = [build_image(seed) for seed in (1, 2)]
    assert again.flags(images) == [True, True]


def downloaded(hub: FakeHub) -> set[str]:
    """The repo files whose bodies the fake sent (named in the URL, or as a blob on its CDN)."""
    by_sha = {file.sha256: file.path for repo in hub.repos.values() for files in repo.revisions.values()
              for file in files.values()}
    paths = set()
    for request in hub.recorded("GET"):
        if "/resolve/" in request.path:
            paths.add(request.path.rsplit("/", 1)[-1])
        elif request.path.startswith("/cdn/"):
            paths.add(by_sha[request.path.removeprefix("/cdn/")])
    return paths


def build_image(seed: int) -> Any:
    from PIL import Image

    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (48, 80, 3), dtype=np.uint8))


def test_a_relative_checker_folder_is_read_beside_the_config_file(tmp_path: Path) -> None:
    from generation.config import load_generation_config

    (tmp_path / "checker").mkdir()
    path = tmp_path / "config.yaml"
    path.write_text("executor:\n  safety_checker: ./checker\n")
    assert load_generation_config(path).executor.safety_checker == str(tmp_path / "checker")
    path.write_text(f"executor:\n  safety_checker: {CHECKER_REPO}\n")
    assert load_generation_config(path).executor.safety_checker == CHECKER_REPO  # a repo id stays one
