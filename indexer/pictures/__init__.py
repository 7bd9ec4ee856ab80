"""Pictures: where they come from and how they are read, within limits, from untrusted input.

  decode     `Decoder`: bytes to an RGB picture, limits checked from the header, reduced at once
  decode_memory  `DecodeMemory`: each decode's peak estimated from its header, held against one budget; WebP and JPEG 2000 decoded reduced
  decode_avif  AVIF decoded by libavif through ctypes, its planes converted to RGB a band of rows at a time
  decode_tiff  one-strip deflate TIFFs inflated a band of rows at a time, so the full-size picture never exists
  decode_warnings  decoders' warnings (Pillow's, libtiff's) counted on the picture and logged, never on stderr
  reader     `PictureReader` and `ImageLimits`: bytes, files, PIL images, URLs and IIIF services
  fetch      fetching untrusted URLs safely (one deadline, every redirect checked)
  credentials  what a fetch sends to one host (CLIP_GAZE_FETCH_AUTH_FILE), and to no other
  fetch_many  several URLs fetched at once, each in its thread, all under one deadline
  addresses  which IP addresses may be fetched from, and what an allow-list admits
  iiif       IIIF Presentation manifests, read from parsed JSON: the pictures each canvas paints
  iiif_collection  IIIF Collections (v2, v3): the manifests they list, recursively, within limits, loops refused
  iiif_image  IIIF Image API services and regions: which URL gives a picture, or a region, at the model's size
  change_stream  IIIF Change Discovery streams: their activities newer than a time, read from the last page back, within limits
  sources    what a collection source names: folders, tables, manifests, services
  thumbnails  a picture's thumbnail for the explorer: made from the decoded picture, or asked of its IIIF service
  rows       the rows of CSV/TSV and JSON Lines sources, streamed within stated caps
"""
