"""The embedding model catalogue: real models built offline from the packaged MiniLM, loaded and compared."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from agents import models as M

ROOT = Path(__file__).resolve().parents[2]
QUALITY = ROOT / "tests" / "quality"
UNRELATED = ("Preheat the oven to 200 degrees. Mix two cups of flour with a pinch of salt and cold butter, "
             "add the apples and cinnamon, and bake the pie for forty minutes until the crust is golden.")


def windows(words_per: int = 160, stride: int = 120) -> list[str]:
    out = []
    for path in sorted((QUALITY / "corpus").glob("*.txt")):
        words = path.read_text(encoding="utf-8").split()
        out += [" ".join(words[i:i + words_per]) for i in range(0, max(1, len(words) - words_per + stride), stride)]
    return out


# `models_dir` (tests/conftest.py): every catalogue model built once per session, with the network cut.


@pytest.fixture(scope="session")
def loaded(models_dir: Path) -> dict[str, M.EmbeddingModel]:
    return {name: M.load_model(name, models_dir, threads=2) for name in M.CATALOG}


def test_builds_are_complete_and_leave_no_scratch(models_dir: Path) -> None:
    for name, spec in M.CATALOG.items():
        if spec.build is None:
            continue
        manifest = json.loads((models_dir / name / M.BUILD_MANIFEST).read_text())
        assert manifest["recipe"] == M.RECIPE_VERSION and manifest["backend"] == spec.backend
        assert M.is_built(name, models_dir)
    assert not list(models_dir.glob(".*.build-*"))
    assert (models_dir / M.MINILM_ONNX / "model.onnx").stat().st_size < 30e6  # int8: a quarter of fp32's 90 MB


@pytest.mark.parametrize("name", list(M.CATALOG))
def test_vectors_are_normalised_float32_of_the_models_dim(loaded: dict[str, M.EmbeddingModel], name: str) -> None:
    model = loaded[name]
    assert model.name == name and model.dim == M.CATALOG[name].dim
    vectors = model.encode(["What does the GPL say about patents?", "x", "license " * 400])
    assert vectors.shape == (3, model.dim) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert model.encode([]).shape == (0, model.dim)


def test_fingerprints_are_stable_across_loads_and_differ_between_models(
        loaded: dict[str, M.EmbeddingModel], models_dir: Path) -> None:
    prints = {name: model.fingerprint for name, model in loaded.items()}
    assert all(re.fullmatch(r"[0-9a-f]{16}", p) for p in prints.values())
    assert len(set(prints.values())) == len(prints)
    for name in (M.MINILM_ONNX, M.MINILM_DISTILLED):  # the torch one: same folder, same files, same function
        assert M.load_model(name, models_dir).fingerprint == prints[name]


def test_onnx_agrees_with_torch(loaded: dict[str, M.EmbeddingModel]) -> None:
    questions = [q["question"] for q in json.loads((QUALITY / "questions.json").read_text())]
    texts = windows()[::4] + questions[::3] + ["GPL " * 300, "ok"]  # passages, queries, truncated, tiny
    cos = (loaded[M.MINILM_ONNX].encode(texts) * loaded[M.MINILM].encode(texts)).sum(axis=1)
    # measured (int8 per channel): 298 passages mean 0.994 / min 0.986, 61 questions 0.994 / 0.990, ten single
    # words 0.988 / 0.966 ("ok": 3 word pieces, where the int8 embedding table weighs most)
    assert cos.mean() >= 0.99 and cos.min() >= 0.95, (cos.mean(), cos.min())


@pytest.mark.parametrize("name", list(M.CATALOG))
def test_relevant_passage_ranks_above_unrelated(loaded: dict[str, M.EmbeddingModel], name: str) -> None:
    chunks = windows()
    model = loaded[name]
    for question in json.loads((QUALITY / "questions.json").read_text())[::6]:
        answer = " ".join(question["answer_contains"].lower().split())
        relevant = next(c for c in chunks if answer in " ".join(c.lower().split()))
        q, good, bad = model.encode([question["question"], relevant, UNRELATED])
        assert q @ good > q @ bad, question["question"]


@pytest.mark.parametrize("name", list(M.CATALOG))
def test_sentence_vectors_come_from_the_texts_own_pass(loaded: dict[str, M.EmbeddingModel], name: str) -> None:
    """encode_with_spans: the texts' vectors are encode's, and each sentence's pooled vector is nearest to that
    sentence embedded alone (late chunking keeps what a sentence says, in its context)."""
    from streams.sentences import split_sentences

    model = loaded[name]
    texts = [windows()[3], UNRELATED, "x", "GPL " * 399 + "GPL. The last sentence is past the model's window."]
    spans = [[(s.start, s.end) for s in split_sentences(t)] for t in texts]
    vectors, pooled = model.encode_with_spans(texts, spans)
    np.testing.assert_allclose(vectors, model.encode(texts), atol=1e-4)
    for rows, text_spans in zip(pooled, spans, strict=True):
        assert rows.shape == (len(text_spans), model.dim) and rows.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(rows, axis=1), 1.0, atol=1e-5)
    alone = model.encode([texts[0][a:b] for a, b in spans[0]] + [texts[1][a:b] for a, b in spans[1]])
    late = np.vstack([pooled[0], pooled[1]])
    assert len(late) >= 4 and (np.argmax(late @ alone.T, axis=1) == np.arange(len(late))).mean() >= 0.75
    # a sentence the window cut off has no tokens of its own: it gets the text's vector
    if name != M.MINILM_DISTILLED:  # a static model has no window
        np.testing.assert_allclose(pooled[3][-1], vectors[3], atol=1e-5)
    assert model.encode_with_spans([], [])[0].shape == (0, model.dim)


def test_a_sentence_transformers_folder_loads_by_path(loaded: dict[str, M.EmbeddingModel], models_dir: Path) -> None:
    by_path = M.load_model(str(M.packaged_model_path()), models_dir)
    assert isinstance(by_path, M.TorchModel) and by_path.dim == 384
    text = ["a sentence-transformers folder given by its path"]
    np.testing.assert_allclose(by_path.encode(text), loaded[M.MINILM].encode(text), atol=1e-5)
    assert isinstance(M.load_model(str(models_dir / M.MINILM_ONNX), models_dir), M.OnnxModel)  # found by content


def test_bad_names_and_paths_give_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="neither in the catalogue"):
        M.load_model(str(tmp_path / "no-such-model"), tmp_path)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("not a model")
    with pytest.raises(ValueError, match="not an embedding model folder"):
        M.load_model(str(tmp_path / "junk"), tmp_path)
    with pytest.raises(KeyError, match="unknown embedding model"):
        M.ensure_built("no-such-model", tmp_path)


def test_a_failed_build_leaves_nothing_and_a_killed_ones_scratch_is_cleared(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(target: Path) -> None:
        (target / "half.bin").write_bytes(b"0" * 1000)
        raise RuntimeError("killed halfway")

    monkeypatch.setitem(M.CATALOG, "broken", M.ModelSpec("broken", "onnx", 4, "fails", broken))
    with pytest.raises(RuntimeError, match="killed halfway"):
        M.ensure_built("broken", tmp_path, isolated=False)  # in-process: the child would not see the patch
    assert not (tmp_path / "broken").exists() and not list(tmp_path.glob(".broken.build-*"))

    def fine(target: Path) -> None:
        (target / "model.onnx").write_bytes(b"x")

    (tmp_path / ".fine.build-left-by-a-kill").mkdir()  # what SIGKILL mid-build leaves
    monkeypatch.setitem(M.CATALOG, "fine", M.ModelSpec("fine", "onnx", 4, "works", fine))
    assert (M.ensure_built("fine", tmp_path, isolated=False) / "model.onnx").read_bytes() == b"x"
    assert not list(tmp_path.glob(".fine.build-*"))


def heavy_modules_after_loading(name: str, models_dir: Path, **env: str) -> tuple[list[str], str]:
    """In a fresh interpreter: load and use a model; which of torch & co. got imported, and its fingerprint."""
    code = ("import sys; from pathlib import Path; from agents.models import load_model; "
            f"m = load_model({name!r}, Path({str(models_dir)!r})); m.encode(['hello']); "
            "print(sorted(k for k in ('torch', 'sentence_transformers', 'transformers') if k in sys.modules)); "
            "print(m.fingerprint)")
    env = {**os.environ, **env,
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    modules, fingerprint = done.stdout.strip().splitlines()[-2:]
    return json.loads(modules.replace("'", '"')), fingerprint


@pytest.mark.parametrize("name", [M.MINILM_ONNX, M.MINILM_DISTILLED])
def test_torch_free_models_load_without_torch(models_dir: Path, name: str) -> None:
    assert heavy_modules_after_loading(name, models_dir)[0] == []


def test_first_use_builds_in_a_child_and_stays_torch_free(
        loaded: dict[str, M.EmbeddingModel], tmp_path: Path) -> None:
    # the child builds with torch; this process (a fresh embedder) must not import it, and the bytes are the
    # same as an in-process build's (the export is deterministic). Any HTTP request would hit a dead proxy.
    modules, fingerprint = heavy_modules_after_loading(M.MINILM_ONNX, tmp_path, HTTPS_PROXY="http://127.0.0.1:9",
                                                       HTTP_PROXY="http://127.0.0.1:9")
    assert modules == [] and fingerprint == loaded[M.MINILM_ONNX].fingerprint


def test_distilled_model_is_in_model2vec_format(loaded: dict[str, M.EmbeddingModel], models_dir: Path) -> None:
    model2vec = pytest.importorskip("model2vec")
    texts = [UNRELATED, *windows()[:5]]
    theirs = model2vec.StaticModel.from_pretrained(models_dir / M.MINILM_DISTILLED).encode(texts)
    cos = (theirs * loaded[M.MINILM_DISTILLED].encode(texts)).sum(axis=1)
    assert cos.min() > 0.999  # model2vec averages in float16, this loader in float32


def test_the_topology_knows_every_catalogue_model_and_its_dim() -> None:
    from streams.topology import EMBEDDING_MODELS  # what `ragbus reindex` and the indexes check names against

    assert {name: spec.dim for name, spec in M.CATALOG.items()} == EMBEDDING_MODELS
