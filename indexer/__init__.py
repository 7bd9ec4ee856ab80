"""clip-gaze's core: models, vocabularies, the store (SQLite + FAISS), pictures, scoring, the engine,
and the features over it. The CLI, the library and the service (`clip_gaze`, `service`) use it; it
never imports them.

Floors: each folder or module imports only its own modules and those of lower floors (checked by
tests/test_layers.py, which reads this table; `python tests/layers.py` prints the figures).

  8  explore/       a collection seen whole: its map, scores, facets, thumbnails, picture records
  8  interop/       back into a museum's systems: IIIF annotation pages, the wide CSV, reviews
  7  collections/   a museum's pictures: adding (here or on Ray), analysis, search, tables
  7  explain/       where in a picture CLIP sees a phrase: decomposition, maps, overlays
  7  evaluate/      CLIP against human labels: labels files, terms, metrics, the report
  7  interrogate/   the prompt a generator would answer to: modes, the chain, prefix reuse, captions
  7  multimodel/    several models in one process: the served set, side-by-side answers
  6  engine.py      the facade the faces touch: model, stores, reader, vocabularies, indexes, hubs
  5  scoring/       cosines, the softmax over a whole vocabulary, the hub correction
  4  vocabularies/  listing, editing, phrase embeddings and the in-memory indexes, for one model
  3  models/        what a model offers, the registry, the torch and ONNX Runtime runtimes, export
  3  pictures/      decoding with limits, the reader, safe fetching, IIIF, collection sources
  3  store/         SQLite (phrases, pictures, jobs, migrations) and the FAISS index files
  2  schema/        the typed boundary: every request and answer, and every limit
  2  catalog.py     the built-in vocabularies: the catalog, list files, templates
  1  errors.py      the domain errors, each with its code and HTTP status
  1  settings.py    the settings, as one table
  1  atomic.py      files written whole or not at all
  1  spreadsheet.py text cells no spreadsheet runs as a formula, for every CSV written

`toy/` holds the toy model's config and weights (data, not code).
"""

__version__ = "1.1.0"
