"""``espo check``: every shipped config and documented overlay passes for the world size it declares, and each
broken case fails with its one line. Parse only: no trainer, no data, no weights (a model directory here is a
config.json, an empty weights file and a tokenizer_config.json)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from espo.cli import EspoCLI, cli, main
from espo.tools.check import Report, check

REPO = Path(__file__).resolve().parents[2]
SHIPPED = sorted(str(p.relative_to(REPO)) for p in (REPO / "configs").glob("**/*.yaml")
                 if p.parent.name not in ("scale", "ranking"))  # snippets and compare overlays, not configs
# Every "--config configs/X.yaml --config configs/scale/Y.yaml" the docs and the configs' own headers show.
_PAIR = re.compile(r"--config (configs/[\w/]+\.yaml) --config (configs/scale/\w+\.yaml)")
OVERLAYS = sorted({m.groups() for p in [*(REPO / "docs").glob("*.md"), *(REPO / "configs").glob("**/*.yaml")]
                   for m in _PAIR.finditer(p.read_text(encoding="utf-8"))})


def run(*args: str | Path) -> Report:
    return check([str(a) for a in args], cli, EspoCLI)


def model_dir(root: Path, model_type: str, chat_template: bool = True, **config: object) -> Path:
    """A model directory as the check reads it: config.json, a weights file (never opened), tokenizer config."""
    root.mkdir()
    (root / "config.json").write_text(json.dumps({"model_type": model_type, **config}))
    (root / "model.safetensors").write_bytes(b"")
    tokenizer = {"chat_template": "{{ messages }}"} if chat_template else {}
    (root / "tokenizer_config.json").write_text(json.dumps(tokenizer))
    return root


@pytest.mark.parametrize("config", SHIPPED)
def test_every_shipped_config_passes_for_its_world_size(config):
    report = run("--config", REPO / config)
    assert report.errors == []


def test_the_docs_document_overlays():
    assert ("configs/code.yaml", "configs/scale/fsdp_1node_8gpu.yaml") in OVERLAYS
    assert {scale for _, scale in OVERLAYS} == {"configs/scale/fsdp_1node_8gpu.yaml", "configs/scale/multinode.yaml"}


@pytest.mark.parametrize("recipe,scale", OVERLAYS)
def test_every_documented_overlay_passes(recipe, scale):
    report = run("--config", REPO / recipe, "--config", REPO / scale)
    assert report.errors == []


def test_an_overlay_composes_as_fit_composes_it():
    # sdar_gsm8k.yaml declares devices auto with LoRA; the later FSDP2 snippet wins key by key: 8 processes,
    # and LoRA under FSDP2 is refused as build_policy would refuse it.
    report = run("--config", REPO / "configs/sdar_gsm8k.yaml", "--config", REPO / "configs/scale/fsdp_1node_8gpu.yaml")
    assert dict(report.rows)["processes"].startswith("8 = trainer.devices 8 x trainer.num_nodes 1, ModelParallel")
    assert report.errors == [
        "model.policy: LoRA and 4-bit bases are not supported under FSDP2 (ModelParallelStrategy) yet: use "
        "trainer.strategy ddp (or one device) with model.policy.lora, or full fine-tuning under FSDP2."]


def test_a_batch_that_does_not_divide_over_the_devices_fails():
    # The batch the FSDP configs shipped with: 2 prompts over 8 processes.
    report = run("--config", REPO / "configs/sdar_gsm8k_fsdp.yaml", "--data.init_args.batch_size", "2")
    assert report.errors == ["data.batch_size=2 is the global batch (prompts per step over all processes) and must "
                             "divide over the 8 processes; choose a multiple of 8."]


def test_a_missing_model_directory_fails(tmp_path: Path):
    missing = tmp_path / "no-model"
    report = run("--config", REPO / "configs/demo.yaml", "--model.policy.path", missing)
    assert report.errors == [f"model.policy.path {missing}: no such model directory; point it at a directory with "
                             "config.json, weights and tokenizer files, or at an owner/name hub id."]


def test_a_hub_id_is_not_checked_offline():
    report = run("--config", REPO / "configs/gsm8k.yaml")
    assert "model.policy.path GSAI-ML/LLaDA-8B-Instruct: a hub id, not checked offline (family, tokenizer)" in (
        report.notes)


def test_spg_on_a_block_diffusion_model_fails(tmp_path: Path):
    sdar = model_dir(tmp_path / "sdar", "sdar", block_size=4)
    report = run("--config", REPO / "configs/sdar_gsm8k.yaml", "--model.policy.path", sdar, "--model.objective", "SPG")
    assert report.errors == [
        "model.objective: SPG on a block-diffusion model (sdar) is not supported as the paper ran it: its views "
        "noise the clean earlier blocks, which a block-diffusion model reads clean; use ESPO, DiffuGRPO or WD1 (or "
        "SPG on LLaDA or Dream)."]


def test_a_bidirectional_sampler_on_a_block_model_fails(tmp_path: Path):
    sdar = model_dir(tmp_path / "sdar", "sdar", block_size=4)
    report = run("--config", REPO / "configs/gsm8k.yaml", "--model.policy.path", sdar)
    assert report.errors == [f"model.sampler: LLaDASampler on a block-diffusion model (sdar, {sdar}); use "
                             "BlockDiffusionSampler with the model's block_length."]


def test_the_block_sampler_on_a_bidirectional_model_fails(tmp_path: Path):
    llada = model_dir(tmp_path / "llada", "llada")
    report = run("--config", REPO / "configs/sdar_gsm8k.yaml", "--model.policy.path", llada)
    assert report.errors == [f"model.sampler: BlockDiffusionSampler needs a block-diffusion model (SDAR, LLaDA2), "
                             f"but {llada} is llada; use LLaDASampler or DreamSampler."]


def test_a_chat_task_on_a_tokenizer_without_a_template_fails(tmp_path: Path):
    llada = model_dir(tmp_path / "llada", "llada", chat_template=False)
    report = run("--config", REPO / "configs/gsm8k.yaml", "--model.policy.path", llada)
    assert report.errors == [f"model.policy.path {llada}: the tokenizer has no chat template (tokenizer_config.json "
                             "chat_template), but GSM8K gives chat messages; use a tokenizer with a template."]


def test_a_data_parallel_size_that_is_not_the_world_size_fails():
    report = run("--config", REPO / "configs/code.yaml", "--config", REPO / "configs/scale/multinode.yaml",
                 "--trainer.num_nodes", "4", "--data.init_args.batch_size", "32")
    assert report.errors == ["trainer.strategy.init_args.data_parallel_size=16 must equal trainer.devices x "
                             "trainer.num_nodes = 32; set data_parallel_size: 32."]


def test_a_settings_error_names_its_key():
    report = run("--config", REPO / "configs/demo.yaml", "--model.sampler.init_args.block_length", "7")
    assert report.errors == ["model.sampler: block_length (7) must divide gen_length (20)."]


def test_the_command_exits_1_with_one_line_per_problem(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["check", "--config", str(REPO / "configs/llada2_gsm8k_fsdp.yaml"), "--data.init_args.batch_size", "4"])
    assert stop.value.code == 1
    assert capsys.readouterr().err == ("error: data.batch_size=4 is the global batch (prompts per step over all "
                                       "processes) and must divide over the 8 processes; choose a multiple of 8.\n")


def test_the_command_prints_the_effective_run_and_returns_normally(capsys):
    main(["check", "--config", str(REPO / "configs/demo.yaml")])  # exit status 0: the console script returns
    out = capsys.readouterr().out
    assert "48 = 8 prompts x 6 generations" in out and "trainer.max_steps 320 = 160 rollout steps" in out
