"""Record the twin's golden table digests: ``python -m tests.golden.record [--keep DIR]``.

Run it only to pin a result on purpose (see :mod:`tests.golden.cases`).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from lab.runner import run_experiment
from tests.golden.cases import DIGESTS, digests, experiments


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keep", type=Path, default=None, help="keep the run directories here")
    ap.add_argument("--out", type=Path, default=DIGESTS)
    args = ap.parse_args()
    result = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        for name, (exp, base) in experiments().items():
            out = root / name
            run_experiment(exp, out_dir=out, base_dir=base, show_progress=False, jobs=1)
            result[name] = digests(out)
            print(name, {t: v["rows"] for t, v in result[name].items()}, flush=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
