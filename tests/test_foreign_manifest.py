"""``loffdata index DIR|GLOB`` turns shards from any tar writer (webdataset's TarWriter, GNU
tar) into a dataset: the full manifest, checked like one the writer made."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile

import numpy as np
import pytest

from loffdata.cli.main import main
from loffdata.errors import ManifestError, SampleError
from loffdata.format.manifest import Manifest
from loffdata.format.sample import encode_sample
from loffdata.format.stats import ChannelStats
from loffdata.ops.manifest import build_manifest
from loffdata.ops.verify import verify


def _samples(n, *, shape=(6, 3, 3), classes=4, start=0, dtype="float16"):
    rng = np.random.default_rng(start)
    for i in range(start, start + n):
        x = rng.standard_normal(shape).astype(np.float32) + i % classes
        yield (
            f"img{i:05d}",
            x,
            i % classes,
            encode_sample(
                f"img{i:05d}",
                x,
                label=i % classes,
                dtype=dtype,
                extras={"pooled": x.mean(axis=(1, 2))},
            ),
        )


def _gnu_tar(path, samples) -> None:
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tar:
        for *_, members in samples:
            for name, data in members:
                info = tarfile.TarInfo(name)
                info.size, info.mtime, info.mode = len(data), 1700000000, 0o640
                tar.addfile(info, io.BytesIO(data))


def _wds_tar(path, samples) -> None:
    import webdataset as wds

    with wds.TarWriter(str(path)) as sink:
        for key, _, _, members in samples:
            sink.write({"__key__": key, **{name.split(".", 1)[1]: data for name, data in members}})


def _exit_code(argv) -> int:
    try:
        main(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    return 0


@pytest.fixture
def foreign(tmp_path):
    pytest.importorskip("webdataset")
    root = tmp_path / "foreign"
    root.mkdir()
    _wds_tar(root / "part-a.tar", list(_samples(7)))
    _gnu_tar(root / "part-b.tar", list(_samples(5, start=7)))
    _gnu_tar(root / ".hidden.tar", list(_samples(2, start=50)))  # never a shard
    return root


def test_index_builds_the_full_manifest(foreign, tmp_path, capsys):
    (tmp_path / "names.json").write_text(
        json.dumps({"0": "cat", "1": "dog", "2": "owl", "3": "yak"})
    )
    assert (
        _exit_code(["index", str(foreign), "--classes", str(tmp_path / "names.json"), "--quiet"])
        == 0
    )
    assert (
        "wrote a manifest: 2 shards, 12 samples, features float16[6, 3, 3], 4 classes"
        in capsys.readouterr().out
    )
    m = Manifest.load(str(foreign))
    assert [s.name for s in m.shards] == ["part-a.tar", "part-b.tar"] and [
        s.samples for s in m.shards
    ] == [7, 5]
    assert m.classes == ["cat", "dog", "owl", "yak"] and set(m.extras) == {"pooled"}
    for s in m.shards:
        data = (foreign / s.name).read_bytes()
        assert s.bytes == len(data) and s.sha256 == hashlib.sha256(data).hexdigest() and s.indexed
    expected = ChannelStats()
    for _, x, _, _ in [*_samples(7), *_samples(5, start=7)]:
        expected.update(x.astype(np.float16).astype(np.float32), channel_axis=0)
    assert np.allclose(m.stats.mean, expected.mean) and np.allclose(m.stats.std, expected.std)
    assert verify(str(foreign), progress=False).ok


def test_a_glob_and_label_values_as_classes_then_training_data(foreign, tmp_path):
    from loffdata.loader import LoffLoader

    m = build_manifest(str(foreign / "part-*.tar"), progress=False)
    assert m.classes == ["0", "1", "2", "3"] and m.num_samples == 12
    loader = LoffLoader(str(foreign), batch_size=4, augment=None, num_workers=0, shuffle=False)
    assert loader.manifest.features.shape == (6, 3, 3) and sum(len(y) for _, y in loader) == 12


def test_a_sample_unlike_the_first_is_named(tmp_path):
    root = tmp_path / "mixed"
    root.mkdir()
    _gnu_tar(root / "a.tar", [*_samples(3), *_samples(1, shape=(6, 4, 4), start=3)])
    with pytest.raises(SampleError, match=r"6, 4, 4.*first sample.*a\.tar.*img00003"):
        build_manifest(str(root), progress=False)
    assert not (root / "manifest.json").exists()


def test_labels_outside_the_names_and_no_shards_are_refused(foreign, tmp_path):
    with pytest.raises(ManifestError, match="labels \\[2, 3\\] lie outside the 2 class names"):
        build_manifest(str(foreign), classes="cat,dog", progress=False)
    with pytest.raises(ManifestError, match="no .tar shards"):
        build_manifest(str(tmp_path / "nothing-*.tar"), progress=False)


def test_inspect_on_foreign_shards_says_how_to_build_the_manifest(foreign, capsys):
    assert _exit_code(["inspect", str(foreign)]) == 1
    assert f"build one with: loffdata index {foreign}" in capsys.readouterr().err
    assert _exit_code(["verify", str(foreign / "*.tar")]) == 1
    assert f"build one with: loffdata index '{foreign}/*.tar'" in capsys.readouterr().err
