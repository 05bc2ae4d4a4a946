"""Extract foundation-model feature maps with timm and write loffdata shards.

Examples::

    python tools/shard.py                      # embedded "shapes" demo -> out/demo/{train,val}
    python tools/shard.py --input data/imagenet --out s3://bucket/in1k-dinov2 \\
        --model vit_base_patch14_dinov2.lvd142m --pretrained --img_size 518 --pool 2
    python tools/shard.py --config extract.yaml --out /data/feats   # a YAML or JSON file of flags
    torchrun --nproc_per_node 8 tools/shard.py --input data.csv --out /data/feats

Every flag is a field of ``loffdata.extract.config.ExtractConfig`` (same name, default and
doc); all of them are checked before any work starts. Re-running the same command resumes;
see docs/extract.md.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from loffdata.cli import parse as cliutil  # noqa: E402
from loffdata.extract.config import ExtractConfig, check_paths  # noqa: E402

__all__ = ["main"]

OPTIONS = cliutil.options_from_dataclass(ExtractConfig)


def main(argv: list[str] | None = None) -> None:
    """Checks every flag, then extracts each split of the input into ``<out>/<split>``."""
    values = cliutil.parse_command(sys.argv[1:] if argv is None else argv, OPTIONS,
                                   prog="tools/shard.py", doc=__doc__)
    if values is None:
        return
    config = cliutil.build(ExtractConfig, values)
    check_paths(config)
    from loffdata.extract.pipeline import extract  # heavy (torch, timm): only after the checks

    manifests = extract(config)
    if int(os.environ.get("RANK", "0")) != 0:
        return
    for split, m in manifests.items():
        print(f"{split}: {m.num_samples} samples, {len(m.shards)} shards, features {list(m.features.shape)} "
              f"{m.features.dtype}, skipped {len(m.skipped)} -> {config.out.rstrip('/')}/{split}")


if __name__ == "__main__":
    cliutil.run(main)
