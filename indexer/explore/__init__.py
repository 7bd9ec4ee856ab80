"""The explorer: a whole collection seen through CLIP, as the explorer page shows it; made beside a
collection's `Collections` (`explorer.Explorer(collections)`).

  explorer  `Explorer`: the map, scores and facets filtered by `where`, a picture's record, its thumbnail
  frame     a collection's embedded pictures at one version, in one order, with their embeddings
  scores    a vocabulary read over a whole collection: best phrases, a phrase's probability, cached
  where     the filters scores and facets share (metadata, a phrase's probability, a best phrase)
  layout    UMAP layouts in [0, 1]², and later pictures placed into an earlier one
  maps      the map job: computed in the background per collection version, stored, answered
  wire      the map's answer as bytes (JSON, compact Arrow with chosen fields), kept per layout with an ETag
  explain_source  a picture's explanation from its source read again, else from its thumbnail
"""
