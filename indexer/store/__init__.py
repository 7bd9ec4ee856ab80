"""The data directory: SQLite (the source of truth) and the FAISS index files derived from it.

  sqlite        sqlite-utils, imported without pandas
  migrations    the database's numbered schema steps
  phrase_store  `Store`: connections, transactions, vocabularies, phrases and their embeddings
  image_store   `ImageStore`: collections, their pictures, each picture's embedding by content, jobs
  thumbnails    `ThumbnailStore`: each picture's thumbnail, keyed by its content
  maps          `MapStore`: each collection's latest 2-D layout per model, and the job computing the next
  picture_removal  `remove_pictures`: a collection's pictures removed by external id, source or IIIF manifest
  syncs         `SyncStore`: per collection and change stream, the last sync's end time and the one in flight
  callbacks     `CallbackStore`: jobs' callbacks, claimed one attempt at a time, and every attempt
  reviews       `Reviews`: people's verdicts (accepted, rejected) on a picture's terms
  index_files   `IndexFiles`: one FAISS index per model and vocabulary version, written atomically
  keys          `KeyStore`: API keys with scopes and grants, their secrets only as hashes
  audit         `Audit`: the trail of writes, with the key that made each
"""
