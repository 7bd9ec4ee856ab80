"""A folder of real-world odd files, as a curator would add it: every file's fate, in one run.

Adds FOLDER to a fresh collection with the toy model (the decoding, not the model, is what this
measures) and prints what the add report says (added, failed by code, passed over), checks that every
file of the folder is accounted for (embedded, listed with a reason, or passed over by the README's
rule), then sends every file to `POST /v1/analyze` in-process and counts the answers by status (a
5xx is a failure of this run). The largest such folder this machine can assemble is Pillow's own test
images (`Tests/images` of github.com/python-pillow/Pillow: 1,067 files of 40-odd formats, many
deliberately broken):

    python bench/odd_folder.py /path/to/Pillow/Tests/images
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
import warnings
from collections import Counter
from pathlib import Path

from common import header, peak_rss_mb

from indexer.collections.local import Collections  # noqa: E402
from indexer.engine import Engine  # noqa: E402
from indexer.pictures.sources import NOT_PICTURES  # noqa: E402
from indexer.schema import parse  # noqa: E402
from indexer.schema.collections import AddSources, CreateCollection  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folder", type=Path)
    args = ap.parse_args()
    folder: Path = args.folder.resolve()
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    header(f"odd folder: {folder} ({len(files):,} files)")
    warnings.simplefilter("ignore")  # Pillow's warnings about odd files: counted by no one here
    suffixes = Counter(p.suffix.lower() or "(none)" for p in files)
    print("  by extension:", ", ".join(f"{s} {n}" for s, n in suffixes.most_common(12)), "…")

    with tempfile.TemporaryDirectory(prefix="clip-gaze-odd-") as home:
        os.environ["CLIP_GAZE_HOME"] = home
        engine = Engine(Path(home), "toy")
        collections = Collections(engine)
        collections.create(parse(CreateCollection, {"name": "odd"}))
        t0 = time.perf_counter()
        report = collections.add("odd", parse(AddSources, {"sources": [str(folder)]}))
        seconds = time.perf_counter() - t0
        failed = collections.view("odd", errors=True, limit=100_000).pictures
        codes = Counter(p.error_code for p in failed)
        print(f"\ncollection add: {report.total:,} files read, {report.added:,} added, {report.failed:,} failed, "
              f"{report.ignored:,} passed over, in {seconds:.1f} s")
        print("  failures by code:", ", ".join(f"{c} {n}" for c, n in codes.most_common()))
        hidden = sum(1 for p in files if any(part.startswith(".") for part in p.relative_to(folder).parts))
        text = sum(1 for p in files if p.suffix.lower() in NOT_PICTURES
                   and not any(part.startswith(".") for part in p.relative_to(folder).parts))
        accounted = report.added + report.failed + report.ignored
        print(f"  passed over: {hidden} hidden, {text} text or metadata files")
        print(f"  every file accounted for: {accounted:,} of {len(files):,} "
              f"({'yes' if accounted == len(files) and report.ignored == hidden + text else 'NO'})")

        from service import create_app
        from indexer.settings import Settings

        app = create_app(Settings.from_env(), engine=engine)
        client = app.test_client()
        statuses: Counter[int] = Counter()
        api_codes: Counter[str] = Counter()
        t0 = time.perf_counter()
        for p in files:
            resp = client.post("/v1/analyze", data={"image": (io.BytesIO(p.read_bytes()), p.name), "vocabularies": "qualities"})
            statuses[resp.status_code] += 1
            body = resp.get_json(silent=True) or {}
            if resp.status_code != 200:
                api_codes[str(body.get("code"))] += 1
            if resp.status_code >= 500:
                print(f"  5xx: {p.relative_to(folder)}: {body}")
        print(f"\nPOST /v1/analyze of every file: {dict(sorted(statuses.items()))} in {time.perf_counter() - t0:.1f} s")
        print("  refusals by code:", ", ".join(f"{c} {n}" for c, n in api_codes.most_common()))
        print(f"  peak RSS of this process: {peak_rss_mb():,.0f} MB")
        return 1 if any(s >= 500 for s in statuses) else 0


if __name__ == "__main__":
    sys.exit(main())
