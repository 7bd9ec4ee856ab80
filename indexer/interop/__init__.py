"""Back into a museum's own systems: what clip-gaze found, in the forms their tools take in.

  context      clip-gaze's JSON-LD context: the score's terms (probability, softmax_over, …), documented
  annotations  IIIF Presentation 3 AnnotationPages of W3C Web Annotations, from the stored embeddings
  regions      where a match's explanation peaks, in canvas coordinates (the annotation's xywh=)
  wide         the wide CSV: one row a picture, each vocabulary's top term in three columns
  reviews      people's verdicts on suggestions: checked against the vocabulary, then stored
"""
