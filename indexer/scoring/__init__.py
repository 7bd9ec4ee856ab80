"""Scoring: cosines, the softmax over a whole vocabulary, and the hub correction. No torch needed.

  kernels   the one matrix product on the scoring path (float32, or float16 compact indexes)
  softmax   relative likelihoods and top-k, for one picture or many
  hubs      scores set against a reference collection (`HubCorrection`)
"""
