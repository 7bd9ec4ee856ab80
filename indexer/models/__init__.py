"""Models: what a model offers (`protocol.ClipModel`), how it is named, and the two runtimes.

  protocol     `ClipModel`: the members every runtime offers the engine
  registry     presets and model names (data; nothing is loaded)
  torch_model  open_clip's own model (`LoadedModel`), loaded through the Hugging Face cache or a file
  onnx_model   `OnnxModel`: the same model served by ONNX Runtime from its export, without torch
  manifest     the ONNX export's format: where it lives, what its manifest says
  export       exporting both towers to ONNX, once, under a lock
  parity       torch against ONNX Runtime on the same pictures and phrases
  backends     which runtime serves (CLIP_GAZE_BACKEND), and loading it
  batching     pictures of concurrent requests in one forward pass; phrases batched by length
  preprocess   open_clip's image preprocessing in Pillow and numpy
  tokenizer    open_clip's BPE tokenizer in Python
  hf_tokenizer  open_clip's HFTokenizer (XLM-R, SigLIP) from tokenizer.json, through `tokenizers`
  nllb         NLLB-CLIP: each phrase read in its own language (BCP-47 → NLLB code), thread-safe
  memory       what loading a model costs: the process's memory growth, the weights' bytes
"""
