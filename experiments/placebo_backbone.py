"""A placebo post-trained backbone: the loaded backbone moved a small share of the way
toward a post-trained one, to measure how far fine-tuning scores move when the backbone
changes by almost nothing (the noise floor of a "post-training does not hurt" test).

    python experiments/placebo_backbone.py --post-trained runs/absa_wise25/sentihood-backbone \
        --weight 0.04 --output runs/absa_placebo/sentihood-backbone

The saved backbone is ``original + weight * (post_trained - original)`` for the encoder
(embeddings, layers, pooler), with ``original`` the packaged MiniLM unless ``--original``
names another; ``weight`` 0.04 of a backbone saved a quarter of the way
(`pretrain post-train`'s default) is 1% of the full post-training change. With the same
``original``, that is the backbone `pretrain post-train --interpolation 0.01` would have
saved from the same run, and its ``pretraining_settings.json`` says so
(``interpolation`` times ``weight``), for ``summarize_post_probes.py``.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from transformers import AutoTokenizer

from ernie_kg.paths import default_backbone
from ernie_kg.training.post_training import interpolate_backbone, post_training_model, save_backbone


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--post-trained", type=Path, required=True,
                        help="a post-trained BERT backbone directory")
    parser.add_argument("--weight", type=float, required=True,
                        help="share of the way from the original to the post-trained")
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--original", default=None,
                        help="the backbone post-training started from (default: MiniLM)")
    args = parser.parse_args(argv)
    original = args.original or default_backbone()
    model = post_training_model(args.post_trained)
    interpolate_backbone(model, post_training_model(original), args.weight)
    args.output.mkdir(parents=True, exist_ok=True)
    save_backbone(model, args.output)
    AutoTokenizer.from_pretrained(str(args.post_trained)).save_pretrained(args.output)
    (args.output / "placebo.json").write_text(json.dumps(
        {"post_trained": str(args.post_trained), "original": str(original),
         "weight": args.weight}, indent=2) + "\n")
    settings_file = args.post_trained / "pretraining_settings.json"
    if settings_file.is_file():  # the run's recipe, saved that much nearer the original
        settings = json.loads(settings_file.read_text(encoding="utf-8"))
        settings["interpolation"] = settings.get("interpolation", 1.0) * args.weight
        (args.output / settings_file.name).write_text(json.dumps(settings, indent=2) + "\n")
    print(f"saved {args.output}: {args.weight} of the way from {original} "
          f"to {args.post_trained}")


if __name__ == "__main__":
    main()
