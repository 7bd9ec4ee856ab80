"""Several models in one process (CLIP_GAZE_MODELS), side by side.

  served     the served models: one engine per model over one data directory, found by the name a
             request gives (`model`), made and loaded on first use or at start, with what each costs
  side_by_side  one picture under several models over the same lists, with their agreement
  agreement  Spearman's ρ over a whole list and top-k overlap (numpy only)
"""
