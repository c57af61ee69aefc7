"""README "Install it, and run it from anywhere": "Relative paths inside it (`models.cache_dir`, a local model,
VAE or LoRA file, a SQLite `bot.database_url`) are relative to the file's folder, and the data folder ... sits
beside it unless `IMAGINE_DATA_DIR` names another"."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.__main__ import data_dir
from bot.core.config import load_config
from generation.config import load_generation_config
from tests.bot_harness import is_result
from tests.fake_discord import FakeDiscord
from tests.test_bot_process import ROOT, SMALL_CONFIG, bot_env, bot_process, stop, until_synced

CONFIG = """\
models:
  default: tiny
  cache_dir: weights
  tiny: {source: "builtin:tiny"}
  folder: {source: ./models/sd15, vae: ./models/vae, preview_decoder: madebyollin/taesd}
  file: {source: models/dreamy.safetensors, fuse_lora: loras/lcm.safetensors}
  hub: {source: stable-diffusion-v1-5/stable-diffusion-v1-5, fuse_lora: latent-consistency/lcm-lora-sdv1-5}
  beside: {source: local/sd15}
  absolute: {source: /srv/models/sd15}
  home: {source: ~/models/sd15}
loras:
  ink: {source: loras/ink.safetensors, families: [sd1]}
  pixel: {source: someone/pixel-art, weight_name: pixel.safetensors, families: [sd1]}
bot:
  database_url: sqlite+aiosqlite:///db/imagine.db?timeout=30
"""


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A config folder, and the current directory somewhere else."""
    folder = tmp_path / "site"
    (folder / "local" / "sd15").mkdir(parents=True)  # an owner/name-shaped folder that exists beside the file
    (folder / "config.yaml").write_text(CONFIG)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.delenv("IMAGINE_DATA_DIR", raising=False)
    return folder


def test_relative_paths_in_the_config_are_relative_to_its_folder(site: Path) -> None:
    config = load_config(Path("..") / "site" / "config.yaml")  # given relative to another directory
    generation = config.generation
    models = generation.models
    assert generation.cache_dir == str(site / "weights")
    assert (models["folder"].source, models["folder"].vae) == (str(site / "models/sd15"), str(site / "models/vae"))
    assert models["folder"].preview_decoder == "madebyollin/taesd"  # a hub id stays one
    assert models["file"].source == str(site / "models/dreamy.safetensors")
    assert models["file"].fuse_lora == str(site / "loras/lcm.safetensors")
    assert models["hub"].source == "stable-diffusion-v1-5/stable-diffusion-v1-5"
    assert models["hub"].fuse_lora == "latent-consistency/lcm-lora-sdv1-5"
    assert models["beside"].source == str(site / "local/sd15")  # exists beside the file: a folder, not a repo
    assert (models["absolute"].source, models["home"].source) == ("/srv/models/sd15", "~/models/sd15")
    assert models["tiny"].source == "builtin:tiny"
    assert generation.loras["ink"].source == str(site / "loras/ink.safetensors")
    assert generation.loras["pixel"].source == "someone/pixel-art"
    assert config.bot.database_url == f"sqlite+aiosqlite:///{site}/db/imagine.db?timeout=30"


def test_the_generation_cli_reads_the_same_paths(site: Path) -> None:
    """``python -m generation --config`` loads through ``load_generation_config``: the same anchoring."""
    generation = load_generation_config(site / "config.yaml")
    assert generation == load_config(site / "config.yaml").generation
    assert generation.models["folder"].source == str(site / "models/sd15")


def test_absolute_and_in_memory_database_urls_are_left_alone(site: Path) -> None:
    for url in ("sqlite+aiosqlite:////var/lib/imagine/imagine.db", "sqlite+aiosqlite:///:memory:",
                "postgresql+asyncpg://imagine@db.internal/imagine"):
        (site / "config.yaml").write_text(f"bot: {{database_url: '{url}'}}\n")
        assert load_config(site / "config.yaml").bot.database_url == url


def test_the_data_folder_is_beside_the_config_unless_imagine_data_dir_says_otherwise(
        site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert data_dir(Path("..") / "site" / "config.yaml") == site / "data"
    assert data_dir(None) == Path.cwd() / "data"  # no config file at all: the current directory
    monkeypatch.setenv("IMAGINE_DATA_DIR", "state")
    assert data_dir(site / "config.yaml") == Path.cwd() / "state"  # an environment path: from where it was given


async def test_python_m_bot_started_elsewhere_keeps_its_data_beside_the_config(fake: FakeDiscord,
                                                                              tmp_path: Path) -> None:
    """Issue 11: "`python -m bot` only works from the repository folder, and `data/` and `config.yaml` are
    looked up relative to the current directory"."""
    site, elsewhere = tmp_path / "site", tmp_path / "elsewhere"
    site.mkdir()
    elsewhere.mkdir()
    (site / "config.yaml").write_text(SMALL_CONFIG)
    env = bot_env(site, **fake.env)
    del env["IMAGINE_CONFIG"], env["IMAGINE_DATA_DIR"]
    env["PYTHONPATH"] = str(ROOT)  # what installing the package does; the current directory is not the project
    log_path = tmp_path / "bot.log"
    async with bot_process(env, log_path, "--config", "../site/config.yaml", cwd=elsewhere) as process:
        await until_synced(fake, process, log_path, "imagine")
        handle = await fake.slash("imagine", {"prompt": "a fox"}, user="alice")
        await handle.wait_original(is_result)
        code = await stop(process)
    assert code == 0, log_path.read_text()
    assert (site / "data" / "imagine.db").exists() and any((site / "data" / "images").rglob("*.png"))
    assert list(elsewhere.iterdir()) == []
