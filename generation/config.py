"""Configuration of models and the executor: the ``models:``, ``executor:`` and ``loras:`` sections of config.yaml."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from generation.configfile import parse_yaml, read_config_text, validate_section, within
from generation.errors import ConfigError
from generation.paths import anchored_path, anchored_source, folder_of

Family = Literal["sd1", "sd2", "sdxl"]
DType = Literal["auto", "float16", "bfloat16", "float32"]
SCHEDULERS = ("default", "euler", "euler_a", "dpmpp_2m", "dpmpp_2m_karras", "ddim", "pndm", "lcm", "unipc")
SchedulerName = Literal["default", "euler", "euler_a", "dpmpp_2m", "dpmpp_2m_karras", "ddim", "pndm", "lcm", "unipc"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


Steps = Annotated[int, within(1, 200)]
# The safety checker Stable Diffusion ships with (CLIP ViT-L/14 and its concept embeddings, about 1.2 GB).
SAFETY_CHECKER_SOURCE = "CompVis/stable-diffusion-safety-checker"
# Random weights built in code: builtin:tiny flags nothing, builtin:tiny-flag-all flags every image.
BUILTIN_SAFETY_CHECKERS = ("builtin:tiny", "builtin:tiny-flag-all")
Guidance = Annotated[float, within(0, 30)]
Side = Annotated[int, within(64, 4096, "px")]
_SIZE = re.compile(r"[1-9][0-9]{1,3}x[1-9][0-9]{1,3}")
MAX_PIXELS = 4096 * 4096


class ModelConfig(_Strict):
    """One named model: where it comes from and the limits requests for it must respect."""

    source: str = Field(description="hub repo id, local diffusers folder, .safetensors file, or builtin:tiny")
    family: Family = "sd1"
    revision: str | None = None
    variant: str | None = Field(default=None, description="e.g. fp16 to download half-precision weights; auto: "
                                "fp16 on CUDA and MPS, the full-precision files on a CPU")
    dtype: DType = "auto"
    scheduler: SchedulerName = "default"
    default_steps: Steps = 25
    max_steps: Steps = 50
    default_guidance: Guidance = 7.0
    max_guidance: Guidance = 20.0
    default_width: Side = 512
    default_height: Side = 512
    max_width: Side = 1024
    max_height: Side = 1024
    max_pixels: Annotated[int, within(64 * 64, MAX_PIXELS, "pixels")] = 768 * 768
    size_multiple: Annotated[int, within(8, 128, "px")] = Field(default=8, multiple_of=8)  # latents are 1/8 size
    vae: str | None = Field(default=None, description="optional replacement VAE source")
    fuse_lora: str | None = Field(default=None, description="a LoRA merged into the weights at load (hub repo id "
                                  "or a .safetensors file), e.g. the LCM-LoRA that makes 4-step images")
    preview_decoder: str | None = Field(
        default=None, description="optional tiny autoencoder (TAESD) for previews: a hub repo id or a local folder "
        "(madebyollin/taesd for SD 1.x, madebyollin/taesdxl for SDXL); builtin:taesd-random: its architecture with "
        "random weights (benchmarks)")
    safety_checker: bool = Field(default=False, description="check every image of this model with the "
                                 "executor's safety checker, even where no server's safety mode asks for it")
    img2img: bool = True
    enabled: bool = Field(default=True, description="false: a ready entry that is not served (say, too big for "
                          "this GPU); requests naming it are refused")
    max_batch_images: Annotated[int, within(1, 64)] | None = Field(
        default=None, description="most images of this model in one batch (the scheduler also keeps to "
        "executor.max_batch_images); from `python -m bench.batch_sizes`; null: the executor's limit alone")
    cost_weight: Annotated[float, within(0.001, 1000)] = Field(
        default=1.0, description="relative cost of one step at 512x512")

    @model_validator(mode="after")
    def _defaults_within_maxima(self) -> ModelConfig:
        problems = []
        if self.default_steps > self.max_steps:
            problems.append(f"default_steps {self.default_steps} exceeds max_steps {self.max_steps}")
        if self.default_guidance > self.max_guidance:
            problems.append(f"default_guidance {self.default_guidance} exceeds max_guidance {self.max_guidance}")
        if self.default_width > self.max_width or self.default_height > self.max_height:
            problems.append("default size exceeds max_width/max_height")
        for name in ("default_width", "default_height", "max_width", "max_height"):
            if getattr(self, name) % self.size_multiple:
                problems.append(f"{name} {getattr(self, name)} is not a multiple of size_multiple {self.size_multiple}")
        if problems:
            raise ValueError("; ".join(problems))
        return self


DEVICE_PATTERN = r"auto|cpu|mps|cuda(:[0-9]{1,2})?"
ExecutorMode = Literal["local", "redis"]


class ExecutorConfig(_Strict):
    """How and where models run: in the bot's process (``mode: local``), or on GPU worker processes that take
    batches from Redis (``mode: redis``; ``python -m generation.worker``, see generation/remote/)."""

    device: str = Field(default="auto", description="auto, cpu, mps, cuda or cuda:N (one GPU of several)")
    dtype: DType = "auto"
    max_batch_images: Annotated[int, within(1, 64)] = 4
    max_loaded_models: Annotated[int, within(1, 16)] = 1
    attention_slicing: bool = False
    vae_tiling_above_pixels: Annotated[int, within(0, MAX_PIXELS, "pixels")] = Field(
        default=1024 * 1024, description="0 disables VAE tiling")
    cpu_offload: bool = False
    channels_last: bool = True
    fuse_qkv: bool = Field(default=False, description="fuse each attention's q, k and v projections into one matmul "
                           "(where the pipeline supports it); not with loras: adapters on q, k, v would be skipped")
    compile: bool = Field(default=False, description="torch.compile the UNet and the VAE decoder for fixed shape "
                          "buckets, warmed in the background at start-up while the eager modules serve; other "
                          "shapes run eager, never recompiled; not with loras (adapters change the graph)")
    compile_mode: Literal["reduce-overhead", "max-autotune", "default"] = Field(
        default="reduce-overhead", description="torch.compile's mode: reduce-overhead and max-autotune use CUDA graphs")
    compile_scope: Literal["model", "blocks"] = Field(
        default="model", description="model: the whole UNet is one graph per bucket (fastest to run); blocks: only "
        "its repeated transformer blocks are compiled, one graph shared by every block of a shape (regional "
        "compilation: much less to compile, a little slower to run; bench.compile_scope measures both)")
    compile_buckets: tuple[str, ...] = Field(
        default=(), description="the sizes (WxH, e.g. 512x768) compiled for each model that allows them; empty: each "
        "model's default size")
    compile_batch_sizes: tuple[Annotated[int, within(1, 64)], ...] = Field(
        default=(1, 2, 4, 8), description="images per pipeline call compiled for each size (those above the batch "
        "limits are skipped)")
    compile_cache_dir: str | None = Field(
        default=None, description="torch's on-disk compile cache (TORCHINDUCTOR_CACHE_DIR), so that a restart does "
        "not compile again; default: torch's own, under the system's temporary folder")
    preview_every_steps: Annotated[int, within(0, 200)] = Field(default=5, description="0 disables previews")
    threads: Annotated[int, within(1, 1024)] | None = Field(
        default=None, description="torch CPU threads; default: torch's choice")
    safety_checker: str = Field(
        default=SAFETY_CHECKER_SOURCE, description="the safety checker's source: a hub repo id or a local folder "
        "(the checker and its feature extractor), or builtin:tiny / builtin:tiny-flag-all (random weights, for "
        "tests); builtin models are always checked by builtin:tiny, so smoke runs download nothing")

    @field_validator("compile_buckets")
    @classmethod
    def _bucket_sizes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for size in value:
            if not _SIZE.fullmatch(size):
                raise ValueError(f"compile bucket {size!r} is not a size; allowed: WIDTHxHEIGHT, e.g. 512x768")
        return value

    @property
    def bucket_sizes(self) -> list[tuple[int, int]]:
        """``compile_buckets`` as (width, height) pairs."""
        return [(int(width), int(height)) for width, height in (size.split("x") for size in self.compile_buckets)]

    @field_validator("safety_checker")
    @classmethod
    def _checker_source(cls, value: str) -> str:
        if value.startswith("builtin:") and value not in BUILTIN_SAFETY_CHECKERS:
            builtins = ", ".join(BUILTIN_SAFETY_CHECKERS)
            raise ValueError(f"unknown builtin safety checker {value!r}; allowed: {builtins}, a hub repo id "
                             "(owner/name) or a local folder")
        return value
    # Scale-out (mode: redis). The bot and its workers read the same keys: both must agree on the namespace.
    mode: ExecutorMode = Field(default="local", description="local: this process runs the models; redis: GPU "
                               "workers (python -m generation.worker) do, over the Redis at redis_url")
    redis_url: str | None = Field(default=None, description="redis://host:port/db, needed by mode: redis")
    redis_namespace: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")] = Field(
        default="imagine", description="prefix of every key: bots sharing one Redis each use their own")
    heartbeat_s: Annotated[float, within(0.05, 60, "s")] = Field(
        default=1.0, description="how often a worker says it is alive; silent for 5 of these, it is dead")
    shared_dir: str | None = Field(default=None, description="a folder the bot and its workers share: results "
                                   "larger than inline_result_bytes are passed there instead of through Redis")
    inline_result_bytes: Annotated[int, within(1024, 512 * 1024 * 1024, "bytes")] = 8 * 1024 * 1024
    result_ttl_s: Annotated[float, within(10, 86_400, "s", "a day")] = Field(
        default=3600.0, description="how long results wait in Redis (or shared_dir) for the bot to take them")

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        if not re.fullmatch(DEVICE_PATTERN, value):
            raise ValueError(f"device {value!r} is unknown; allowed: auto, cpu, mps, cuda or cuda:N (N: the GPU's "
                             "index)")
        return value

    @model_validator(mode="after")
    def _redis_needs_url(self) -> ExecutorConfig:
        if self.mode == "redis" and not self.redis_url:
            raise ValueError("mode redis needs redis_url (e.g. redis://127.0.0.1:6379/0)")
        return self


LORA_WEIGHT_LIMIT = 2.0  # |weight| above this mostly burns the image; negative weights steer away
LoraWeight = Annotated[float, within(-LORA_WEIGHT_LIMIT, LORA_WEIGHT_LIMIT)]
LORA_RESERVED_KEY = "max_per_request"  # the one key of ``loras:`` that is not a LoRA's name
_LORA_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")  # typed in <lora:NAME:W>; peft refuses dots in adapter names


class LoraConfig(_Strict):
    """One named LoRA: a local ``.safetensors`` file, or a hub repo id with the file's ``weight_name``."""

    source: str = Field(description="a local .safetensors file, or a hub repo id (owner/name)")
    weight_name: str | None = Field(default=None, description="the .safetensors file in a hub repo")
    revision: str | None = None
    families: list[Family] = Field(min_length=1, description="the model families it was trained for")
    default_weight: LoraWeight = 1.0
    trigger_words: list[Annotated[str, Field(min_length=1, max_length=100)]] = Field(
        default_factory=list, description="appended to the prompt when the LoRA is used")

    @model_validator(mode="after")
    def _source_shape(self) -> LoraConfig:
        local = self.source.endswith(".safetensors")
        if self.source.endswith((".ckpt", ".pt", ".pth", ".bin")):
            raise ValueError(f"source {self.source!r} is a pickled file, which can run code when loaded; "
                             "allowed: a .safetensors file or a hub repo id (owner/name)")
        if local and (self.weight_name or self.revision):
            raise ValueError(f"source {self.source!r} is a local file; weight_name and revision are for hub repos")
        if not local:
            if self.source.count("/") != 1 or self.source.startswith((".", "/", "~")):
                raise ValueError(f"source {self.source!r} is neither a .safetensors file nor a hub repo id "
                                 "(owner/name); allowed: one of those")
            if not (self.weight_name or "").endswith(".safetensors"):
                raise ValueError(f"hub source {self.source!r} needs weight_name, the .safetensors file to load "
                                 "(only safetensors: pickled weights can run code)")
        return self


def _builtin_models() -> dict[str, ModelConfig]:
    return {"tiny": ModelConfig(source="builtin:tiny", default_steps=4, max_steps=50, default_width=64,
                                default_height=64, max_width=512, max_height=512, max_pixels=512 * 512)}


class GenerationConfig(_Strict):
    """The parts of config.yaml that ``generation`` reads."""

    default_model: str = "tiny"
    models: dict[str, ModelConfig] = Field(default_factory=_builtin_models)
    executor: ExecutorConfig = Field(default_factory=ExecutorConfig)
    cache_dir: str | None = Field(default=None, description="models.cache_dir: where hub downloads are kept "
                                  "(default: huggingface_hub's cache under HF_HOME)")
    loras: dict[str, LoraConfig] = Field(default_factory=dict)
    max_loras_per_request: Annotated[int, within(1, 10)] = 3

    @field_validator("loras")
    @classmethod
    def _lora_names(cls, value: dict[str, LoraConfig]) -> dict[str, LoraConfig]:
        for name in value:
            if not _LORA_NAME.fullmatch(name):
                raise ValueError(f"LoRA name {name!r} is not allowed; allowed: 1 to 64 letters, digits, _ or -")
        return value

    @model_validator(mode="after")
    def _default_model_exists(self) -> GenerationConfig:
        if self.default_model not in self.models:
            allowed = ", ".join(sorted(self.models)) or "(none configured)"
            raise ValueError(f"default model {self.default_model!r} is not configured; configured models: {allowed}")
        if not self.models[self.default_model].enabled:
            raise ValueError(f"default model {self.default_model!r} has enabled: false; enabled models: "
                             f"{', '.join(self.enabled_names()) or '(none)'}")
        # peft puts LoRAs into the very layers that compiling and fusing replace: they would be skipped or recompile.
        switches = [name for name in ("compile", "fuse_qkv") if getattr(self.executor, name)]
        if switches and self.loras:
            raise ValueError(f"executor.{' and executor.'.join(switches)} cannot be used with loras; allowed: "
                             "either LoRAs or these switches")
        return self

    def enabled_names(self) -> list[str]:
        """The models requests may name, sorted."""
        return sorted(name for name, model in self.models.items() if model.enabled)

    def model(self, name_or_source: str | None) -> tuple[str, ModelConfig]:
        """The model for a request: a configured name, a raw source (``builtin:tiny``, a path), or the default."""
        if name_or_source is None:
            return self.default_model, self.models[self.default_model]
        if name_or_source in self.models:
            chosen = self.models[name_or_source]
            if not chosen.enabled:
                raise ConfigError(f"model {name_or_source!r} is switched off (models.{name_or_source}.enabled: false); "
                                  f"enabled models: {', '.join(self.enabled_names())}")
            return name_or_source, chosen
        for name, model in self.models.items():
            if model.source == name_or_source:
                return name, model
        if name_or_source.startswith("builtin:") or Path(name_or_source).exists() or "/" in name_or_source:
            tiny = _builtin_models()["tiny"]
            base = {"builtin:tiny": tiny, "builtin:tiny-xl": tiny.model_copy(update={"family": "sdxl"})}.get(
                name_or_source, ModelConfig(source=name_or_source))
            return name_or_source, base.model_copy(update={"source": name_or_source})
        allowed = ", ".join(self.enabled_names())
        raise ConfigError(f"unknown model {name_or_source!r}; configured models: {allowed}")

    def anchored(self, base: Path) -> GenerationConfig:
        """A copy whose relative local paths (model, VAE, preview decoder and fused LoRA sources, LoRA files,
        ``models.cache_dir``, the safety checker's source, ``executor.shared_dir``) are relative to ``base``, the
        config file's folder (``generation.paths``)."""
        def model_at(model: ModelConfig) -> ModelConfig:
            fields = ("source", "vae", "preview_decoder", "fuse_lora")
            update = {name: anchored_source(getattr(model, name), base) for name in fields if getattr(model, name)}
            return model.model_copy(update=update)

        def lora_at(lora: LoraConfig) -> LoraConfig:
            local = lora.source.endswith(".safetensors")
            return lora.model_copy(update={"source": anchored_path(lora.source, base)}) if local else lora

        return self.model_copy(update={
            "models": {name: model_at(model) for name, model in self.models.items()},
            "loras": {name: lora_at(lora) for name, lora in self.loras.items()},
            "cache_dir": anchored_path(self.cache_dir, base) if self.cache_dir else None,
            "executor": self.executor.model_copy(update={
                "safety_checker": anchored_source(self.executor.safety_checker, base),
                "shared_dir": anchored_path(self.executor.shared_dir, base) if self.executor.shared_dir else None,
                "compile_cache_dir": (anchored_path(self.executor.compile_cache_dir, base)
                                      if self.executor.compile_cache_dir else None)}),
        })

    def with_default_model(self, name_or_source: str) -> GenerationConfig:
        """A copy whose default model is ``name_or_source`` (how IMAGINE_MODEL overrides the file)."""
        name, model = self.model(name_or_source)
        return self.model_copy(update={"default_model": name, "models": {**self.models, name: model}})


# Keys of the models: mapping that are settings, not model names.
_MODELS_SETTINGS = ("default", "cache_dir")


def generation_config_from_mapping(data: dict[str, Any], source: str, lines: dict[Any, int]) -> GenerationConfig:
    """Validate the ``models:``, ``executor:`` and ``loras:`` sections of an already parsed config file."""
    models_section = data.get("models") or {}
    if not isinstance(models_section, dict):
        raise ConfigError(f"{source}: models must be a mapping with 'default' and named entries")
    loras_section = data.get("loras") or {}
    if not isinstance(loras_section, dict):
        raise ConfigError(f"{source}: loras must be a mapping of names to LoRAs (and {LORA_RESERVED_KEY})")
    section = {
        "default_model": models_section.get("default", "tiny"),
        "models": {k: v for k, v in models_section.items() if k not in _MODELS_SETTINGS} or _builtin_models(),
        "cache_dir": models_section.get("cache_dir"),
        "executor": data.get("executor") or {},
        "loras": {k: v for k, v in loras_section.items() if k != LORA_RESERVED_KEY},
    }
    if LORA_RESERVED_KEY in loras_section:
        section["max_loras_per_request"] = loras_section[LORA_RESERVED_KEY]
        if (line := lines.get(("loras", LORA_RESERVED_KEY))) is not None:
            lines = {**lines, ("max_loras_per_request",): line}
    if section["default_model"] not in section["models"]:
        line = lines.get(("models", "default")) or lines.get(("models",))
        where = f" (line {line})" if line is not None else ""
        allowed = ", ".join(sorted(section["models"]))
        raise ConfigError(f"{source}: invalid configuration: models.default{where}: default model "
                          f"{section['default_model']!r} is not configured; configured models: {allowed}")
    if ("models", "cache_dir") in lines:  # an error names the line where the file has the key
        lines = {**lines, ("cache_dir",): lines[("models", "cache_dir")]}
    try:
        return validate_section(GenerationConfig, section, source, lines)
    except ConfigError as exc:
        # The section was reshaped, so rename its keys back to what the file says.
        message = str(exc).replace("default_model", "models.default").replace(" cache_dir", " models.cache_dir")
        raise ConfigError(message.replace("max_loras_per_request", f"loras.{LORA_RESERVED_KEY}")) from exc


def load_generation_config(path: Path | None) -> GenerationConfig:
    """Read ``models:``/``executor:``/``loras:`` from a config file; other sections are the bot's and ignored here.
    Relative paths in it are relative to the file's folder."""
    if path is None:
        return GenerationConfig()
    data, lines = parse_yaml(read_config_text(path), str(path))
    return generation_config_from_mapping(data, str(path), lines).anchored(folder_of(path))
