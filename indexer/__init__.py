"""clip-gaze's engine: models, vocabularies, the store (SQLite + FAISS), indexing and scoring.

Nothing here imports `service` or `clip_gaze`; `scoring` and `vocab` import nothing heavy.
"""
