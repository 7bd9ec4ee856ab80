"""Custom vocabularies at museum scale: a thesaurus of 40,000 terms with catalogue identifiers, added
through the REST API in batches, to `clip-gaze serve` (ViT-B-32, random weights, CPU).

    python bench/write_throughput.py [--terms 40000] [--batch 2000]

Each batch is one request and one SQLite transaction; the time is dominated by embedding the new
phrases. A second pass re-sends every batch to show that re-adding costs no embedding.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time

from common import header

from clip_gaze import Client  # noqa: E402

from concurrency import free_port, start, stop  # noqa: E402

SUBJECTS = ["saint jerome", "the annunciation", "a still life", "a river landscape", "the flight into egypt",
            "a vanitas", "a harbour at dusk", "portrait of a merchant", "the last supper", "a tavern interior"]
QUALIFIERS = ["with lion", "in his study", "with skull", "under a tree", "by candlelight", "in winter",
              "with angels", "with a dog", "at night", "in the rain"]


def thesaurus(n: int) -> list[dict[str, str]]:
    rng = random.Random(0)
    return [{"term": f"{rng.choice(SUBJECTS)} {rng.choice(QUALIFIERS)} ({i})", "external_id": f"ICON-{i:06d}"} for i in range(n)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--terms", type=int, default=40_000)
    ap.add_argument("--batch", type=int, default=2_000)
    args = ap.parse_args()
    header(f"adding {args.terms:,} phrases through the API, {args.batch:,} a request")
    home = tempfile.mkdtemp(prefix="clip-gaze-bench-")
    token = "bench"
    import os

    os.environ["CLIP_GAZE_API_TOKENS"] = token
    port = free_port()
    proc = start(home, port, window_ms=2)
    try:
        api = Client(f"http://127.0.0.1:{port}", token=token, timeout=600)
        terms = thesaurus(args.terms)
        api.create_vocabulary("iconclass-sample", [], description="benchmark thesaurus", template="a painting of {}")
        t0 = time.perf_counter()
        for i in range(0, len(terms), args.batch):
            assert api.add_phrases("iconclass-sample", terms[i : i + args.batch])["added"] == len(terms[i : i + args.batch])
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        for i in range(0, len(terms), args.batch):
            assert api.add_phrases("iconclass-sample", terms[i : i + args.batch])["added"] == 0
        second = time.perf_counter() - t0
        size = api.vocabulary("iconclass-sample", limit=1)["vocabulary"]["size"]
    finally:
        stop(proc)
    print(f"   first pass: {len(terms):,} new phrases in {first:.0f} s = {len(terms) / first:,.0f} phrases/s "
          f"({args.batch:,} a request, {first / (len(terms) / args.batch):.1f} s a request)")
    print(f"   second pass (all already there): {second:.1f} s = {len(terms) / second:,.0f} phrases/s; vocabulary size {size:,}")


if __name__ == "__main__":
    main()
