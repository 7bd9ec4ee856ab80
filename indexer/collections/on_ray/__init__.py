"""`collection add|analyze --engine ray`: the collections' second distributor, on Ray Data.

  session  Ray itself: installed or not, joined or started, sized, and its errors as ours
  workers  the reading tasks, the encoding actor and the scoring tasks, and their settings
  shards   the Parquet shards the writing tasks leave, and merging them into the store
  driver   `ray_add` and `ray_analyze`: the runs, from the driver
"""
