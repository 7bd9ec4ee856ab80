"""Explanations: where in a picture CLIP sees a phrase.

  decompose  a picture's image embedding split over the patch grid (one forward pass)
  geometry   the part of the picture the model's input covers
  maps       maps for the top matches of each list, and contrasts (`explain_image`)
  overlay    a map drawn over the picture
"""
