"""The peer baseline of bench/ingest.py: the same documents through a plain LangChain pipeline.

    PYTHONPATH=<langchain packages> .venv/bin/python bench/peer_langchain.py DOCS_DIR DSN MODEL_DIR

What a LangChain user writes from the tutorials: each file read as its loader would (TextLoader for text and
Markdown, BeautifulSoup text for HTML as BSHTMLLoader, pypdf page text as PyPDFLoader, python-docx paragraphs as
Docx2txtLoader), RecursiveCharacterTextSplitter (1000/200, LangChain's default), HuggingFaceEmbeddings on the
same packaged MiniLM folder (sentence-transformers + torch, batch 32, normalised), and PGVector
(langchain-postgres) in a fresh PostgreSQL + pgvector, 256 chunks per add_documents call. It runs in its own
process because langchain-huggingface pins a huggingface_hub older than ragbus's: bench/ingest.py installs the
LangChain packages into a separate folder and puts it on PYTHONPATH here only.

Prints one JSON object: chunks, and seconds for load+split, embed+store and the whole corpus (the model is
loaded and the collection created before the clock starts, as ragbus's agents are started before its clock).
"""

from __future__ import annotations

import io
import json
import sys
import time
from pathlib import Path


def load(path: Path) -> str:
    data = path.read_bytes()
    if path.suffix == ".pdf":
        from pypdf import PdfReader

        return "\n".join(page.extract_text() or "" for page in PdfReader(io.BytesIO(data)).pages)
    if path.suffix == ".docx":
        import docx

        return "\n".join(p.text for p in docx.Document(io.BytesIO(data)).paragraphs)
    if path.suffix in (".html", ".htm"):
        from bs4 import BeautifulSoup

        return BeautifulSoup(data, "html.parser").get_text()
    return data.decode("utf-8", errors="replace")


def main(docs_dir: str, dsn: str, model_dir: str) -> int:
    from langchain_core.documents import Document
    from langchain_huggingface import HuggingFaceEmbeddings
    from langchain_postgres import PGVector
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    embeddings = HuggingFaceEmbeddings(model_name=model_dir, model_kwargs={"device": "cpu"},
                                       encode_kwargs={"batch_size": 32, "normalize_embeddings": True})
    embeddings.embed_documents(["warm-up"])
    store = PGVector(embeddings=embeddings, collection_name="peer", connection=dsn, use_jsonb=True)
    splitter = RecursiveCharacterTextSplitter(chunk_size=1000, chunk_overlap=200)
    files = sorted(Path(docs_dir).iterdir())
    started = time.perf_counter()
    chunks: list[Document] = []
    for path in files:
        chunks += splitter.split_documents([Document(load(path), metadata={"source": path.name})])
    loaded = time.perf_counter()
    for i in range(0, len(chunks), 32 * 8):
        store.add_documents(chunks[i:i + 32 * 8])
    done = time.perf_counter()
    print(json.dumps({"docs": len(files), "chunks": len(chunks), "load_split_s": loaded - started,
                      "embed_store_s": done - loaded, "seconds": done - started}))
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
