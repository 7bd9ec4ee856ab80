"""Several models in one process (CLIP_GAZE_MODELS), side by side.

  served     the served models: one engine per model over one data directory, found by the name a
             request gives (`model`), made and loaded on first use or at start, with what each costs
"""
