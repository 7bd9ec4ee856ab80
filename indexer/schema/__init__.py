"""The boundary: every request and answer of clip-gaze as one typed model (pydantic v2).

The engine takes and returns these; the REST views serialise them, the CLI prints them, `Client`
parses them, and the OpenAPI document is generated from them. Each limit is defined once (`fields`),
enforced by validation once and stated in the JSON Schema.

  fields        the field types, their limits and validation, `parse` and the error it raises
  vocabularies  vocabularies: create, add and remove phrases, list, pages of phrases
  languages     a phrase's language (BCP-47 tags checked and canonical) and the `languages` of an analysis
  analysis      the model as clients see it; analyses of pictures, batches and comparisons
  status        health, batching, backends, the index report, the error body
  collections   collections of pictures, jobs, collection analysis rows and search
  explore       the explorer: maps, scores and facets filtered by `where`, picture records, thumbnails
  explain       explanations: maps over the patch grid, contrasts
  interrogate   interrogation: the prompt a generator would answer to, each part scored
  evaluate      evaluations against human labels
  interop       back into a museum's systems: annotation pages, reviews of suggestions
  sync          in step with a museum's systems: pictures removed
  access        API keys with scopes and grants, and the audit trail
  compare_models  one picture under several models side by side, with their rank agreement

Everything of `fields`, `vocabularies`, `analysis` and `status` is importable from `indexer.schema`
itself; the models of collections, explanations, evaluations and model comparisons from their own modules.
"""

from .analysis import *  # noqa: F401,F403
from .fields import *  # noqa: F401,F403
from .status import *  # noqa: F401,F403
from .vocabularies import *  # noqa: F401,F403
