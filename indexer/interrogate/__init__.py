"""Interrogation: the prompt a generator built on CLIP would answer to, every part scored.

  modes       `interrogate`: the modes best, classic, fast and negative, the start, the answer
  candidates  candidate phrases from vocabularies: the exact top (or bottom) k by stored cosine
  chain       the greedy chain, and the token ids of prompts
  prefix      the text tower over one prefix's cached keys and values and many suffixes (torch)
  tree        a step's candidates as a token tree: a start shared by several runs once
  onnx_prefix  the same on ONNX Runtime: a graph of single tokens after cached keys and values, its export
  collection  a prompt for every picture of a collection: CSV or JSON Lines, a .txt beside each
  caption     an optional BLIP captioner (Hugging Face transformers, the `caption` extra)
"""
