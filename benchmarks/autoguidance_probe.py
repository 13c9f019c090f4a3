"""Probe autoguidance (Karras et al. 2024, "Guiding a diffusion model with a bad version of itself") with any guide.

Why: sampling guides a checkpoint by the earlier weights it keeps (``--autoguidance``, core/autoguidance.py); this
tries other guides, e.g. another checkpoint of the same run, D = D_good + w (D_good - D_bad), to choose which
earlier state is worth keeping (docs/quality_per_compute.md). It scores the guided model with the demo detector
exactly as `ddpm-studio evaluate` does (the default sampler, the same noises for every w), so each row compares
with the unguided w = 0.

    python benchmarks/autoguidance_probe.py GOOD.pt BAD.pt [--weights 0,1,2] [--num-images 256] [--json OUT]

BAD may be ``raw``: the good checkpoint's own raw (non-EMA) weights. Prints one line per weight; with ``--json``,
also writes them there.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from ddpm_studio.services.evaluation import EvaluationSession, evaluation_sample_config
from ddpm_studio.services.events import EvaluationReady
from ddpm_studio.services.sampling import load_for_sampling, resolve_device


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("good")
    ap.add_argument("bad")
    ap.add_argument("--weights", default="0,1,2")
    ap.add_argument("--num-images", type=int, default=256)
    ap.add_argument("--json", type=Path, help="Also write the rows here")
    args = ap.parse_args()
    device = resolve_device(args.good, "cpu", "off")
    good = load_for_sampling(args.good, device, use_ema=True)
    bad = load_for_sampling(args.good if args.bad == "raw" else args.bad, device, use_ema=args.bad != "raw")
    rows = []
    loaded = dataclasses.replace(good, guide=bad.model, guide_step=bad.step)
    for weight in (float(w) for w in args.weights.split(",")):
        sample = dataclasses.replace(evaluation_sample_config(), num_images=args.num_images, autoguidance=weight)
        session = EvaluationSession(loaded, sample, None, fid="off", demo=True, memorization=False, device="cpu")
        report = next(ev.report for ev in session.steps() if isinstance(ev, EvaluationReady))
        demo = report["demo"]
        print(f"w = {weight:4.2f}  {args.num_images} samples  score {demo['score']:.3f}  {dict(sorted(demo['reasons'].items()))}",
              flush=True)
        rows.append({"weight": weight, "score": demo["score"], "num_images": args.num_images, "reasons": demo["reasons"]})
    if args.json:
        args.json.write_text(json.dumps({"good": args.good, "bad": args.bad, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
