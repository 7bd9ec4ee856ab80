"""clip-gaze's engine: models, vocabularies, the store (SQLite + FAISS), indexing and scoring, and the
typed boundary (`schema`) that the CLI, the library and the service share.

Nothing here imports `service` or `clip_gaze`; `scoring` and `vocab` import nothing heavy.
"""

__version__ = "1.1.0"
