"""Compiled pipelines in shape buckets (issue 14), on the CPU without a real compile: ``torch.compile`` is replaced by
a wrapper that records calls (or fails), so these tests show which module served which shape, that a failure
leaves the model eager with one warning, and that batches never wait for a compile."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from generation.compiled import plan_buckets, unet_batch
from generation.config import ExecutorConfig, GenerationConfig, LoraConfig, ModelConfig
from generation.request import GenerationRequest, GenerationResult, validate
from generation.runner import Runner


class Recording(torch.nn.Module):
    """Stands in for a compiled module: runs the eager one, and records the shape of each call's first argument
    (and the thread it ran on). ``gate``: calls wait until it is set; ``fail``: calls raise instead."""

    def __init__(self, module: torch.nn.Module, calls: list[tuple[str, tuple[int, ...], str]], *,
                 gate: threading.Event | None = None, fail: bool = False) -> None:
        super().__init__()
        self.inner = module
        self._calls, self._gate, self._fail = calls, gate, fail

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if self._gate is not None:
            self._gate.wait()
        if self._fail:
            raise RuntimeError("inductor: backend compiler failed\nmore detail")
        self._calls.append((type(self.inner).__name__, tuple(args[0].shape), threading.current_thread().name))
        return self.inner(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.inner, name)  # as torch's OptimizedModule: config, dtype, ... of the eager module


def model(**fields: Any) -> ModelConfig:
    values: dict[str, Any] = {"source": "builtin:tiny", "default_steps": 2, "default_width": 64, "default_height": 64,
                              "max_width": 512, "max_height": 512, "max_pixels": 256 * 256}
    return ModelConfig(**{**values, **fields})


def config(**executor: Any) -> GenerationConfig:
    settings: dict[str, Any] = {"device": "cpu", "compile": True, "compile_batch_sizes": (1, 2),
                                "preview_every_steps": 0, "max_batch_images": 4}
    return GenerationConfig(models={"tiny": model()}, executor=ExecutorConfig(**{**settings, **executor}))


def request(generation: GenerationConfig, seed: int = 1, size: int = 64, **fields: Any) -> GenerationRequest:
    name, entry = generation.model(None)
    return validate(GenerationRequest("a lantern", seed=seed, width=size, height=size, **fields), name, entry)


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, tuple[int, ...], str]]:
    """Every call of a "compiled" module; ``torch.compile`` wraps in ``Recording`` (no inductor runs)."""
    made: list[tuple[str, tuple[int, ...], str]] = []
    monkeypatch.setattr(torch, "compile", lambda module, **_: Recording(module, made))
    return made


@pytest.fixture
def runners() -> Iterator[list[Runner]]:
    made: list[Runner] = []
    yield made
    for runner in made:
        runner.close()


def started(generation: GenerationConfig, runners: list[Runner]) -> Runner:
    runner = Runner(generation)
    runners.append(runner)
    runner.prepare(None)
    return runner


def assert_same_as_eager(result: GenerationResult, generation: GenerationConfig, runners: list[Runner], *,
                         seed: int) -> None:
    """``result``'s first image is the one the same request makes with compile off."""
    eager = Runner(generation.model_copy(update={"executor": generation.executor.model_copy(
        update={"compile": False})}))
    runners.append(eager)
    [same] = eager.run([request(generation, seed=seed)])
    assert isinstance(same, GenerationResult)
    assert np.array_equal(np.asarray(result.images[0]), np.asarray(same.images[0]))


# --- which shapes are compiled: pure functions ------------------------------------------------------------------


def test_buckets_default_to_the_models_size_at_each_batch_size_within_the_limits() -> None:
    executor = ExecutorConfig(compile=True, max_batch_images=4)
    assert plan_buckets(executor, model()) == [(64, 64, 1), (64, 64, 2), (64, 64, 4)]  # 8 is above the limit
    assert plan_buckets(executor, model(max_batch_images=2)) == [(64, 64, 1), (64, 64, 2)]


def test_configured_sizes_that_a_model_does_not_allow_are_skipped() -> None:
    executor = ExecutorConfig(compile=True, compile_buckets=("256x128", "512x512", "100x100", "128x256"),
                              compile_batch_sizes=(2, 1), max_batch_images=8)
    # 512x512 is over this model's max_pixels, 100x100 is not a multiple of 8.
    assert plan_buckets(executor, model()) == [(256, 128, 1), (256, 128, 2), (128, 256, 1), (128, 256, 2)]


def test_the_unet_sees_twice_the_images_with_classifier_free_guidance() -> None:
    assert unet_batch(3, 7.0, None) == 6
    assert unet_batch(3, 1.0, None) == 3  # guidance 1: no unconditional half
    assert unet_batch(3, 7.0, 256) == 3  # a guidance-distilled UNet (LCM) takes guidance as an input instead


def test_the_config_names_a_bad_bucket_and_refuses_compile_with_loras(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="compile bucket '512by512' is not a size; allowed: WIDTHxHEIGHT"):
        ExecutorConfig(compile_buckets=("512by512",))
    lora = LoraConfig(source=str(tmp_path / "ink.safetensors"), families=["sd1"])
    with pytest.raises(ValueError, match=r"executor\.compile cannot be used with loras"):
        GenerationConfig(executor=ExecutorConfig(compile=True), loras={"ink": lora})
    with pytest.raises(ValueError, match=r"executor\.fuse_qkv cannot be used with loras"):
        GenerationConfig(executor=ExecutorConfig(fuse_qkv=True), loras={"ink": lora})
    anchored = GenerationConfig(executor=ExecutorConfig(compile_cache_dir="cache/inductor")).anchored(tmp_path)
    assert anchored.executor.compile_cache_dir == str(tmp_path / "cache/inductor")


# --- the runner: compiled where warmed, eager elsewhere -------------------------------------------------------------


def test_warmed_shapes_run_compiled_and_every_other_shape_eager(
        calls: list[tuple[str, tuple[int, ...], str]], runners: list[Runner]) -> None:
    """README: "a shape without a bucket runs eager (never a recompile)"."""
    generation = config()
    runner = started(generation, runners)
    assert runner.wait_compiled(120)
    compiled = runner.model(None).compiled
    assert compiled is not None and compiled.ready
    warmed = {(name, shape) for name, shape, _ in calls}
    # Each bucket once: the UNet with guidance's two rows per image, the decoder with one.
    assert warmed == {("UNet2DConditionModel", (2, 4, 8, 8)), ("UNet2DConditionModel", (4, 4, 8, 8)),
                      ("Decoder", (1, 4, 8, 8)), ("Decoder", (2, 4, 8, 8))}
    assert all(thread == "imagine-compile" for _, _, thread in calls)  # never on the thread that serves
    calls.clear()

    [one] = runner.run([request(generation, seed=5)])
    assert isinstance(one, GenerationResult)
    assert {shape for _, shape, _ in calls} == {(2, 4, 8, 8), (1, 4, 8, 8)}  # the 64x64 x1 bucket, both modules
    calls.clear()
    runner.run([request(generation, seed=1), request(generation, seed=2), request(generation, seed=3)])
    runner.run([request(generation, seed=5, size=96)])
    assert calls == []  # three images, and 96x96: no bucket, so eager, and nothing compiled for them

    assert_same_as_eager(one, generation, runners, seed=5)


def test_batches_run_eager_while_the_buckets_compile(monkeypatch: pytest.MonkeyPatch, runners: list[Runner]) -> None:
    """README: "in the background at start-up while the eager pipeline serves: nobody waits for a compile". With
    the compile held mid-bucket, a batch still runs to its images."""
    made: list[tuple[str, tuple[int, ...], str]] = []
    gate = threading.Event()
    monkeypatch.setattr(torch, "compile", lambda module, **_: Recording(module, made, gate=gate))
    generation = config()
    runner = started(generation, runners)
    try:
        [result] = runner.run([request(generation, seed=3)])
        assert isinstance(result, GenerationResult) and made == []
        assert not runner.wait_compiled(0)
    finally:
        gate.set()
    assert runner.wait_compiled(120)
    compiled = runner.model(None).compiled
    assert compiled is not None and compiled.ready


def test_a_torch_compile_that_raises_leaves_the_model_eager_with_one_warning(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, runners: list[Runner]) -> None:
    """README: "a failed compile leaves the model eager with one warning"."""

    def refuse(*_: Any, **__: Any) -> Any:
        raise RuntimeError("Windows not yet supported for torch.compile\nsecond line")

    monkeypatch.setattr(torch, "compile", refuse)
    generation = config()
    with caplog.at_level(logging.WARNING, logger="generation"):
        runner = started(generation, runners)
        [result] = runner.run([request(generation)])
    assert isinstance(result, GenerationResult) and runner.model(None).compiled is None
    warnings = [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING]
    assert warnings == ["model tiny: torch.compile failed, serving eager: RuntimeError: Windows not yet supported "
                        "for torch.compile"]


def test_a_bucket_that_fails_to_compile_leaves_the_model_eager_with_one_warning(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, runners: list[Runner]) -> None:
    made: list[tuple[str, tuple[int, ...], str]] = []
    monkeypatch.setattr(torch, "compile", lambda module, **_: Recording(module, made, fail=True))
    generation = config()
    with caplog.at_level(logging.WARNING, logger="generation"):
        runner = started(generation, runners)
        assert runner.wait_compiled(120)
        [result] = runner.run([request(generation)])
    compiled = runner.model(None).compiled
    assert isinstance(result, GenerationResult) and compiled is not None and compiled.state == "failed"
    warnings = [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING]
    assert warnings == ["model tiny: compiling failed, serving eager: RuntimeError: inductor: backend compiler failed"]


def test_the_blocks_scope_compiles_only_the_transformer_blocks_and_leaves_the_eager_unet_whole(
        calls: list[tuple[str, tuple[int, ...], str]], runners: list[Runner]) -> None:
    """README: "`compile_scope: blocks` compiles only the UNet's repeated transformer blocks (regional
    compilation)". The same images as eager; the eager UNet, which serves every other shape, is untouched."""
    generation = config(compile_scope="blocks", compile_batch_sizes=(1,))
    runner = started(generation, runners)
    assert runner.wait_compiled(120)
    compiled = runner.model(None).compiled
    assert compiled is not None and compiled.ready
    assert {name for name, _, _ in calls} == {"BasicTransformerBlock", "Decoder"}  # never the whole UNet
    twin, eager_unet = compiled.compiled_unet, compiled.unet
    assert not any(isinstance(module, Recording) for module in eager_unet.modules())
    assert {id(p) for p in twin.parameters()} == {id(p) for p in eager_unet.parameters()}  # no second copy
    calls.clear()

    [one] = runner.run([request(generation, seed=5)])
    assert isinstance(one, GenerationResult)
    assert "BasicTransformerBlock" in {name for name, _, _ in calls}  # the 64x64 x1 bucket ran the compiled blocks
    calls.clear()
    runner.run([request(generation, seed=5, size=96)])
    assert calls == []  # no bucket: the whole eager UNet

    assert_same_as_eager(one, generation, runners, seed=5)
