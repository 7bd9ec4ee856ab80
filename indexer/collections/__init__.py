"""Collections: a museum's pictures embedded once, then scored against any vocabulary and searched;
made beside the engine (`local.Collections(engine)`).

  local    `Collections`: managing, adding, jobs, analysis and search in this process
  ingest   adding pictures: one runner of read → embed → record, and its local distributor
  jobs     background adds and syncs of a service worker: leased, stopped at a checkpoint, resumed after a restart
  feeds    a collection kept in step with a IIIF Change Discovery stream: planned, stored, applied idempotently
  callbacks  a job's answer POSTed, signed, to its `callback_url` when it ends: retried, one process an attempt
  search   the pictures closest to a phrase or a picture (FAISS, exact or calibrated IVF)
  tables   writing analysis rows to Parquet, CSV or JSON Lines, block by block and atomically
  on_ray/  the same adding and analysis as a Ray Data distributor, beyond one machine
"""
