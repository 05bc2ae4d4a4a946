"""Interim demo: write a synthetic feature cache, verify it, and fit a linear probe on it.

(Replaced by the full LOFF-TA demo once extraction and the loader land.)
"""

import io

import numpy as np
import torch

from loffdata.cli import summarize
from loffdata.format import decode_sample
from loffdata.tarstream import iter_sample_members
from loffdata.verify import verify
from loffdata.writer import WriterConfig, write_dataset


def items(n=600, classes=4, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((classes, 16)) * 2
    for i in range(n):
        y = i % classes
        x = rng.standard_normal((16, 4, 4)) + centers[y][:, None, None]
        yield f"demo-{i:06d}", x.astype(np.float32), y


def main(out="demo_out/synthetic"):
    manifest = write_dataset(out, items(), config=WriterConfig(max_samples=200), classes=list("abcd"))
    print(summarize(manifest))
    print("verify:", "OK" if verify(out, progress=False).ok else "FAILED")
    xs, ys = [], []
    for url in manifest.shard_urls(out):
        with open(url, "rb") as f:
            for key, members in iter_sample_members(io.BufferedReader(f), shard=url):
                s = decode_sample(key, members, shard=url)
                xs.append(s.features.astype(np.float32).mean(axis=(1, 2)))
                ys.append(s.label)
    x, y = torch.tensor(np.stack(xs)), torch.tensor(ys)
    probe = torch.nn.Linear(16, 4)
    opt = torch.optim.SGD(probe.parameters(), lr=0.5)
    for _ in range(50):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(probe(x), y)
        loss.backward()
        opt.step()
    print(f"linear probe: loss {loss.item():.3f}, train accuracy {(probe(x).argmax(1) == y).float().mean():.2%}")


if __name__ == "__main__":
    main()
