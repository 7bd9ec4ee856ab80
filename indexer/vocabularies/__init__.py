"""Vocabularies for one model: listed, edited, embedded and held in memory as indexes.

  listing      names resolved, built-ins brought into the store, the answers clients see
  editing      creating and changing custom vocabularies (one transaction each)
  embedder     phrase embeddings: from the store, a memory cache, else the model
  index_cache  the in-memory indexes, kept current with the store, and their files
  languages    an index cut to the phrases in the languages a request names
  collisions   phrases a model's tokenizer cannot tell apart, kept once and reported on writes
  importers    SKOS thesauri and Iconclass files read into phrases with their languages
"""
