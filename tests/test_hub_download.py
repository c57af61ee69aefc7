"""Hub models through the real download path (huggingface_hub, diffusers) against a fake hub on loopback.

The fake serves the tiny model as saved by ``save_pretrained`` (plus an fp16 variant, a second
revision and the files a real repo carries that a pipeline does not need). Nothing here leaves the
machine: huggingface_hub is pointed at the fake for the test and back at the offline suite after it.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from generation.builtin import build_builtin
from generation.config import ExecutorConfig, GenerationConfig, ModelConfig, generation_config_from_mapping
from generation.errors import GenerationCancelled, ModelLoadError
from generation.hub import DownloadProgress, explain_failure, fetch_pipeline
from generation.models import load_model
from generation.request import GenerationRequest, GenerationResult, validate
from generation.runner import Runner
from tests.fake_hub import NOISE_FILES, FakeHub, FakeRepo, go_offline, point_hub_at, read_folder
from tests.fake_hub.ldm import sd1_single_file

TINY_LIMITS: dict[str, Any] = {"default_steps": 2, "default_width": 64, "default_height": 64}
CPU = ExecutorConfig(device="cpu")
UNET = "unet/diffusion_pytorch_model.safetensors"
SD1_CONFIG_REPO = "stable-diffusion-v1-5/stable-diffusion-v1-5"  # what diffusers asks for an SD1 checkpoint


@dataclass(frozen=True)
class TinyFiles:
    main: dict[str, bytes]  # the tiny pipeline as save_pretrained writes it
    fp16: dict[str, bytes]  # its fp16 variant weights only
    other: dict[str, bytes]  # a different seed: revision "v2"
    checkpoint: Path  # the tiny pipeline as an original-format SD1 single file


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory: pytest.TempPathFactory) -> TinyFiles:
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("tiny-hub")
    build_builtin("builtin:tiny").save_pretrained(root / "main")
    half = build_builtin("builtin:tiny")
    half.to(dtype=torch.float16)
    half.save_pretrained(root / "fp16", variant="fp16")
    build_builtin("builtin:tiny", seed=1).save_pretrained(root / "v2")
    save_file(sd1_single_file(build_builtin("builtin:tiny")), str(root / "tiny.safetensors"))
    fp16 = {path: data for path, data in read_folder(root / "fp16").items() if ".fp16." in path}
    return TinyFiles(read_folder(root / "main"), fp16, read_folder(root / "v2"), root / "tiny.safetensors")


@pytest.fixture
def hub(tiny_files: TinyFiles, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    repos = [
        FakeRepo.of("tiny/sd", {"main": {**tiny_files.main, **tiny_files.fp16, **NOISE_FILES}, "v2": tiny_files.other}),
        FakeRepo.of("tiny/gated", {"main": tiny_files.main}, gated=True, accepted_tokens=frozenset({"hf_granted"})),
        FakeRepo.of(SD1_CONFIG_REPO, {"main": tiny_files.main}),
    ]
    with FakeHub(repos) as fake:
        point_hub_at(monkeypatch, fake.endpoint, tmp_path / "hf-home")
        yield fake
    fake.assert_no_failures()


def fetched(hub: FakeHub) -> dict[str, int]:
    """Repo path -> bytes sent, for every file body the fake sent (the CDN's blobs named by their path)."""
    by_sha = {file.sha256: file.path for repo in hub.repos.values() for files in repo.revisions.values()
              for file in files.values()}
    sent: dict[str, int] = {}
    for request in hub.recorded("GET"):
        if "/resolve/" in request.path:
            path = request.path.split("/resolve/", 1)[1].split("/", 1)[1]
        elif request.path.startswith("/cdn/"):
            path = by_sha[request.path.removeprefix("/cdn/")]
        else:
            continue
        sent[path] = sent.get(path, 0) + request.sent
    return sent


def picture(pipe: Any, seed: int = 3) -> Any:
    return pipe(prompt="a red fox", num_inference_steps=2, width=64, height=64, output_type="np",
                generator=torch.Generator("cpu").manual_seed(seed)).images[0]


def hub_model(**fields: Any) -> ModelConfig:
    return ModelConfig(source=fields.pop("source", "tiny/sd"), **TINY_LIMITS, **fields)


def test_a_hub_model_downloads_into_models_cache_dir_and_makes_the_same_picture(
    hub: FakeHub, tiny_files: TinyFiles, tmp_path: Path
) -> None:
    cache = tmp_path / "weights"
    config = GenerationConfig(default_model="hub", models={"hub": hub_model()}, executor=CPU, cache_dir=str(cache))
    runner = Runner(config)
    name, limits = config.model("hub")
    [result] = runner.run([validate(GenerationRequest(prompt="a red fox", seed=3), name, limits)])
    assert isinstance(result, GenerationResult) and result.images[0].size == (64, 64)
    # The weights on the hub are the tiny model's: the picture is the one the built-in model makes.
    builtin = Runner(GenerationConfig(executor=CPU))
    [reference] = builtin.run([validate(GenerationRequest(prompt="a red fox", seed=3, steps=2),
                                        *builtin.config.model("tiny"))])
    assert isinstance(reference, GenerationResult)
    assert np.array_equal(np.asarray(result.images[0]), np.asarray(reference.images[0]))
    # Exactly the pipeline's files came down, into models.cache_dir: no checkpoints, pickles, Flax or ONNX.
    assert set(fetched(hub)) == set(tiny_files.main)
    assert (cache / "models--tiny--sd" / "snapshots").is_dir()


def test_progress_counts_real_bytes_in_order_up_to_the_total(hub: FakeHub, tiny_files: TinyFiles,
                                                              tmp_path: Path) -> None:
    events: list[DownloadProgress] = []
    fetch_pipeline("tiny/sd", revision=None, variant=None, token=None, cache_dir=str(tmp_path / "c"),
                   on_progress=events.append)
    total = sum(len(data) for data in tiny_files.main.values())
    assert {event.total_bytes for event in events} == {total}
    done = [event.done_bytes for event in events]
    assert done == sorted(done) and done[-1] == total and events[-1].fraction == 1.0
    # Byte progress within files (the UNet alone spans many chunks), not one event per file.
    assert sum(1 for event in events if event.current_file == UNET) > 10

    # Cached files count as done at once: a second fetch reports 100 % and downloads nothing.
    events.clear()
    before = fetched(hub)
    fetch_pipeline("tiny/sd", revision=None, variant=None, token=None, cache_dir=str(tmp_path / "c"),
                   on_progress=events.append)
    assert events == [DownloadProgress(total, total)] and fetched(hub) == before


def test_a_connection_cut_mid_file_resumes_where_it_stopped_and_the_model_loads(
    hub: FakeHub, tiny_files: TinyFiles, tmp_path: Path
) -> None:
    size = len(tiny_files.main[UNET])
    hub.cut_after(UNET, 1_000_000)
    events: list[DownloadProgress] = []
    loaded = load_model("hub", hub_model(), CPU, events.append, cache_dir=str(tmp_path / "c"))
    first, second = hub.recorded("GET", f"/cdn/{hub.repos['tiny/sd'].revisions['main'][UNET].sha256}")
    assert first.range is None and first.sent == 1_000_000
    # The second request asks only for the rest, from a point the first one had reached.
    assert second.range is not None and second.status == 206
    start = int(second.range.removeprefix("bytes=").rstrip("-"))
    assert 0 < start <= 1_000_000 and second.sent == size - start
    done = [event.done_bytes for event in events]
    assert done == sorted(done) and done[-1] == events[-1].total_bytes
    reference = build_builtin("builtin:tiny")
    assert torch.equal(loaded.pipe.unet.conv_in.weight, reference.unet.conv_in.weight)


def test_the_fp16_variant_downloads_only_the_half_size_weights(hub: FakeHub, tiny_files: TinyFiles,
                                                                 tmp_path: Path) -> None:
    loaded = load_model("half", hub_model(variant="fp16"), CPU, cache_dir=str(tmp_path / "c"))
    weights = {path for path in fetched(hub) if path.endswith(".safetensors")}
    assert weights == set(tiny_files.fp16)
    assert sum(fetched(hub)[path] for path in weights) == sum(len(data) for data in tiny_files.fp16.values())
    half = build_builtin("builtin:tiny").unet.conv_in.weight.to(torch.float16)
    assert torch.equal(loaded.pipe.unet.conv_in.weight.to(torch.float16), half)


def test_a_revision_other_than_main_is_the_one_loaded(hub: FakeHub, tmp_path: Path) -> None:
    loaded = load_model("v2", hub_model(revision="v2"), CPU, cache_dir=str(tmp_path / "c"))
    commit = hub.repos["tiny/sd"].commit("v2")
    assert hub.recorded("GET", "/api/models/tiny/sd/revision/v2")
    assert hub.recorded("HEAD", f"/tiny/sd/resolve/{commit}/")
    assert not hub.recorded("HEAD", f"/tiny/sd/resolve/{hub.repos['tiny/sd'].commit('main')}/")
    seed_1 = build_builtin("builtin:tiny", seed=1)
    assert torch.equal(loaded.pipe.unet.conv_in.weight, seed_1.unet.conv_in.weight)


def test_a_gated_repo_says_to_accept_the_licence_and_set_hf_token(
    hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ModelLoadError) as anonymous:
        load_model("gated", hub_model(source="tiny/gated"), CPU, cache_dir=str(tmp_path / "c"))
    assert str(anonymous.value) == (
        "model gated: hub repo 'tiny/gated' is gated: accept its licence on the model hub with your account, "
        "then set HF_TOKEN to an access token of that account")
    monkeypatch.setenv("HF_TOKEN", "hf_not_granted")
    with pytest.raises(ModelLoadError) as refused:
        load_model("gated", hub_model(source="tiny/gated"), CPU, cache_dir=str(tmp_path / "c"))
    assert "(the access token sent was refused)" in str(refused.value) and "\n" not in str(refused.value)
    assert {r.status for r in hub.recorded("HEAD", "/tiny/gated/resolve/")} == {401, 403}

    monkeypatch.setenv("HF_TOKEN", "hf_granted")
    load_model("gated", hub_model(source="tiny/gated"), CPU, cache_dir=str(tmp_path / "c"))
    assert hub.recorded("HEAD", "/tiny/gated/resolve/")[-1].authorization == "Bearer hf_granted"


@pytest.mark.parametrize(("fields", "expected"), [
    ({"source": "nobody/nothing"},
     "model m: no hub repo 'nobody/nothing' (or it is private: set HF_TOKEN to an access token that can read it); "
     "check the model's source"),
    ({"revision": "no-such-branch"},
     "model m: hub repo 'tiny/sd' has no revision 'no-such-branch'; check the model's revision setting"),
])
def test_a_missing_repo_or_revision_is_named(hub: FakeHub, tmp_path: Path, fields: dict[str, str],
                                             expected: str) -> None:
    with pytest.raises(ModelLoadError) as error:
        load_model("m", hub_model(**fields), CPU, cache_dir=str(tmp_path / "c"))
    assert str(error.value) == expected
    assert error.value.__cause__ is not None  # the hub's own error stays attached for the log


def test_an_unreachable_hub_serves_a_cached_model_and_names_one_that_is_not(
    hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = str(tmp_path / "c")
    load_model("hub", hub_model(), CPU, cache_dir=cache)
    hub.stop()  # the port is closed: connections are refused
    events: list[DownloadProgress] = []
    load_model("hub", hub_model(), CPU, events.append, cache_dir=cache)
    assert len(events) == 1 and events[0].fraction == 1.0
    with pytest.raises(ModelLoadError) as error:
        load_model("v2", hub_model(revision="v2"), CPU, cache_dir=cache)
    assert str(error.value) == (
        f"model v2: cannot reach the model hub at {hub.endpoint} (HF_HUB_OFFLINE is not set) and hub repo "
        f"'tiny/sd' revision 'v2' is not fully in the local cache {cache}")

    go_offline(monkeypatch)
    load_model("hub", hub_model(), CPU, cache_dir=cache)
    with pytest.raises(ModelLoadError, match=r"\(HF_HUB_OFFLINE is set\) and hub repo 'tiny/sd' revision 'v2'"):
        load_model("v2", hub_model(revision="v2"), CPU, cache_dir=cache)


def test_a_hub_outage_still_starts_a_cached_model_and_says_try_later_for_others(hub: FakeHub, tmp_path: Path) -> None:
    cache = str(tmp_path / "c")
    load_model("hub", hub_model(), CPU, cache_dir=cache)
    hub.outage = 503
    load_model("hub", hub_model(), CPU, cache_dir=cache)
    with pytest.raises(ModelLoadError) as error:
        load_model("v2", hub_model(revision="v2"), CPU, cache_dir=cache)
    assert str(error.value) == "model v2: the model hub answered HTTP 503 for hub repo 'tiny/sd'; try again later"


def test_an_offline_cache_missing_a_weight_file_is_not_taken_for_a_model(
    hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = fetch_pipeline("tiny/sd", revision=None, variant=None, token=None, cache_dir=str(tmp_path / "c"),
                            on_progress=None)
    (folder / UNET).unlink()
    go_offline(monkeypatch)
    asked = len(hub.requests)
    fetch_pipeline("tiny/sd", revision=None, variant=None, token=None, cache_dir=str(tmp_path / "c"),
                   on_progress=None, skip=("unet",))  # all there but the UNet: served offline
    assert len(hub.requests) == asked
    with pytest.raises(ModelLoadError, match="is not fully in the local cache"):
        fetch_pipeline("tiny/sd", revision=None, variant=None, token=None, cache_dir=str(tmp_path / "c"),
                       on_progress=None)


def test_a_single_file_checkpoint_loads_with_its_family_configs_from_the_hub(
    hub: FakeHub, tiny_files: TinyFiles, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = ModelConfig(source=str(tiny_files.checkpoint), **TINY_LIMITS)
    loaded = load_model("ckpt", model, CPU, cache_dir=str(tmp_path / "c"))
    # Configs only (the weights are in the file), from the repo diffusers names for SD1 checkpoints.
    assert set(fetched(hub)) == {path for path in tiny_files.main if path.endswith(".json")}
    assert all(SD1_CONFIG_REPO in r.path for r in hub.recorded("GET", "/resolve/"))
    assert np.array_equal(picture(loaded.pipe), picture(build_builtin("builtin:tiny")))

    go_offline(monkeypatch)  # cached afterwards: loads without asking the hub anything
    asked = len(hub.requests)
    load_model("ckpt", model, CPU, cache_dir=str(tmp_path / "c"))
    assert len(hub.requests) == asked
    with pytest.raises(ModelLoadError) as error:
        load_model("ckpt", model, CPU, cache_dir=str(tmp_path / "empty"))
    message = str(error.value)
    assert "\n" not in message and "(HF_HUB_OFFLINE is set)" in message and SD1_CONFIG_REPO in message
    assert "convert it to a diffusers folder" in message


def test_a_full_disk_names_the_cache_folder() -> None:
    full = OSError(errno.ENOSPC, "No space left on device")
    try:
        raise RuntimeError("download failed") from full
    except RuntimeError as exc:
        text = explain_failure(exc, repo_id="tiny/sd", revision=None, cache_dir="/big/disk")
    assert text == ("disk full while downloading hub repo 'tiny/sd' into /big/disk: free space there, or set "
                    "models.cache_dir (or HF_HOME) to a disk with room")


def test_models_cache_dir_is_a_setting_not_a_model() -> None:
    data = {"models": {"default": "tiny", "cache_dir": "/srv/weights", "tiny": {"source": "builtin:tiny"}}}
    config = generation_config_from_mapping(data, "config.yaml", {("models", "cache_dir"): 3})
    assert config.cache_dir == "/srv/weights" and list(config.models) == ["tiny"]
    from generation.errors import ConfigError

    with pytest.raises(ConfigError, match=r"models\.cache_dir \(line 3\)"):
        generation_config_from_mapping({"models": {"cache_dir": ["x"]}}, "config.yaml", {("models", "cache_dir"): 3})


def test_a_cancel_raised_by_on_progress_stops_the_download_and_nothing_partial_counts(
    hub: FakeHub, tmp_path: Path
) -> None:
    def cancel_at_the_unet(event: DownloadProgress) -> None:
        if event.current_file == UNET:
            raise GenerationCancelled("cancelled by its owner")

    with pytest.raises(GenerationCancelled):
        load_model("hub", hub_model(), CPU, cancel_at_the_unet, cache_dir=str(tmp_path / "c"))
    loaded = load_model("hub", hub_model(), CPU, cache_dir=str(tmp_path / "c"))
    assert torch.equal(loaded.pipe.unet.conv_in.weight, build_builtin("builtin:tiny").unet.conv_in.weight)
    # The cut-short file was not taken for a whole one: the next load fetched it again.
    unet_blob = hub.repos["tiny/sd"].revisions["main"][UNET].sha256
    assert len(hub.recorded("GET", f"/cdn/{unet_blob}")) == 2


SD15_LISTING = {
    path: 1000 for path in (
        "model_index.json", "v1-5-pruned.ckpt", "v1-5-pruned-emaonly.safetensors", "README.md",
        "feature_extractor/preprocessor_config.json", "scheduler/scheduler_config.json",
        "safety_checker/config.json", "safety_checker/model.safetensors", "safety_checker/pytorch_model.bin",
        "safety_checker/model.fp16.safetensors",
        "text_encoder/config.json", "text_encoder/model.safetensors", "text_encoder/model.fp16.safetensors",
        "text_encoder/pytorch_model.bin", "text_encoder/flax_model.msgpack",
        "tokenizer/merges.txt", "tokenizer/special_tokens_map.json", "tokenizer/tokenizer_config.json",
        "tokenizer/vocab.json",
        "unet/config.json", "unet/diffusion_pytorch_model.safetensors", "unet/diffusion_pytorch_model.fp16.safetensors",
        "unet/diffusion_pytorch_model.non_ema.safetensors", "unet/diffusion_pytorch_model.bin",
        "unet/diffusion_flax_model.msgpack",
        "vae/config.json", "vae/diffusion_pytorch_model.bin",  # only pickled weights: still one weight file
        "text_encoder_2/config.json", "text_encoder_2/model.safetensors.index.fp16.json",
        "text_encoder_2/model.fp16-00001-of-00002.safetensors", "text_encoder_2/model.fp16-00002-of-00002.safetensors",
        "text_encoder_2/model.safetensors.index.json", "text_encoder_2/model-00001-of-00002.safetensors",
        "text_encoder_2/model-00002-of-00002.safetensors", "text_encoder_2/openvino_model.bin",
        "vae_encoder/config.json", "vae_encoder/model.onnx",
    )
}
SD15_INDEX = {"_class_name": "StableDiffusionPipeline", "feature_extractor": ["transformers", "CLIPImageProcessor"],
              "safety_checker": ["stable_diffusion", "StableDiffusionSafetyChecker"],
              "scheduler": ["diffusers", "PNDMScheduler"], "text_encoder": ["transformers", "CLIPTextModel"],
              "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"], "image_encoder": [None, None],
              "tokenizer": ["transformers", "CLIPTokenizer"], "unet": ["diffusers", "UNet2DConditionModel"],
              "vae": ["diffusers", "AutoencoderKL"]}
CONFIGS = ["feature_extractor/preprocessor_config.json", "scheduler/scheduler_config.json", "text_encoder/config.json",
           "text_encoder_2/config.json", "tokenizer/merges.txt", "tokenizer/special_tokens_map.json",
           "tokenizer/tokenizer_config.json", "tokenizer/vocab.json", "unet/config.json", "vae/config.json"]


def test_only_one_set_of_weights_per_component_is_chosen_from_a_full_size_repo() -> None:
    from generation.hub import choose_files

    plain = choose_files(SD15_LISTING, SD15_INDEX, variant=None, skip=("safety_checker",))
    assert plain == [*CONFIGS, "text_encoder/model.safetensors", "text_encoder_2/model-00001-of-00002.safetensors",
                     "text_encoder_2/model-00002-of-00002.safetensors", "text_encoder_2/model.safetensors.index.json",
                     "unet/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.bin",
                     "model_index.json"]
    half = choose_files(SD15_LISTING, SD15_INDEX, variant="fp16")
    assert [path for path in half if path not in CONFIGS and not path.endswith("config.json")] == [
        "safety_checker/model.fp16.safetensors", "text_encoder/model.fp16.safetensors",
        "text_encoder_2/model.fp16-00001-of-00002.safetensors", "text_encoder_2/model.fp16-00002-of-00002.safetensors",
        "text_encoder_2/model.safetensors.index.fp16.json", "unet/diffusion_pytorch_model.fp16.safetensors",
        "vae/diffusion_pytorch_model.bin", "model_index.json"]
    only_half = {path: size for path, size in SD15_LISTING.items() if path != "unet/diffusion_pytorch_model.safetensors"
                 and path != "unet/diffusion_pytorch_model.bin" and "non_ema" not in path}
    with pytest.raises(ModelLoadError, match=r"component unet has weights only for variant\(s\) fp16; set variant"):
        choose_files(only_half, SD15_INDEX, variant=None, repo_id="org/sd")
