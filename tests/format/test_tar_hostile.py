"""The tar reader against hand-made hostile headers: clear errors, never a bare crash."""

from __future__ import annotations

import io

import pytest

from loffdata.errors import SampleError, ShardReadError
from loffdata.format.sample import decode_sample
from loffdata.format.tar import iter_members, iter_sample_members, read_sample_at
from tests.craft import archive, features, header, member, sample


def members(data: bytes) -> list[tuple[str, bytes]]:
    return [(n, bytes(d)) for n, d in iter_members(io.BytesIO(data), shard="t.tar")]


@pytest.mark.parametrize(
    "field, message",
    [
        (b"0000000x012\0", r"size b'0000000x012\\x00' is not octal"),
        (b"\x80" + bytes(3) + (1 << 33).to_bytes(8, "big"), "GNU base-256"),
        (b"\xff" * 12, "GNU base-256"),
    ],
)
def test_bad_numeric_fields_name_shard_and_offset(field, message):
    data = archive(sample("a", 0), member("b.feat.msgpack", features(1), size_field=field))
    with pytest.raises(ShardReadError, match=message) as err:
        members(data)
    assert "'t.tar'" in str(err.value) and "byte 2048" in str(err.value)


def test_non_octal_checksum_is_a_corrupt_header():
    block = bytearray(header("a.cls", 1))
    block[148:156] = b"12x4567\0"
    with pytest.raises(ShardReadError, match="byte 0 of shard 't.tar'.*checksum"):
        members(archive(bytes(block) + b"1" + bytes(511)))


@pytest.mark.parametrize("kind", [b"2", b"5", b"1"])  # symlink, directory, hard link
def test_long_name_in_front_of_a_non_regular_member_does_not_carry_over(kind):
    long = "x" * 120 + ".feat.msgpack"
    gnu = member("././@LongLink", long.encode() + b"\0", kind=b"L")
    data = archive(gnu, header("link", 0, kind=kind, linkname="elsewhere"), *[sample("k1", 1)])
    assert [n for n, _ in members(data)] == ["k1.feat.msgpack", "k1.cls"]


def test_pax_path_in_front_of_a_directory_does_not_carry_over():
    record = b"path=" + b"y" * 120 + b".feat.msgpack\n"
    pax = member("PaxHeader", b"%d %s" % (len(record) + 4, record), kind=b"x")
    data = archive(pax, header("dir/", 0, kind=b"5"), sample("k1", 1))
    assert [n for n, _ in members(data)] == ["k1.feat.msgpack", "k1.cls"]


def test_declared_size_beyond_the_file_fails_before_allocating():
    huge = b"%012o" % (8 << 30)  # 8 GiB
    data = archive(sample("a", 0), member("b.feat.msgpack", b"", size_field=huge))
    with pytest.raises(
        ShardReadError, match=r"'b.feat.msgpack' at byte 2048 declares 8589934592 bytes"
    ):
        members(data)


def test_consecutive_duplicate_keys_are_refused():
    data = archive(sample("a", 0), sample("a", 1), sample("b", 2))
    with pytest.raises(ShardReadError, match="duplicate sample key 'a'.*byte 2048"):
        list(iter_sample_members(io.BytesIO(data), shard="t.tar"))


@pytest.mark.parametrize(
    "label", [b"99999999999999999999", b"-9223372036854775809", b"9223372036854775808"]
)
def test_labels_outside_int64_are_sample_errors(label):
    with pytest.raises(SampleError, match="outside int64") as err:
        decode_sample("k", {"feat.msgpack": features(0), "cls": label}, shard="t.tar")
    assert err.value.key == "k" and err.value.shard == "t.tar"
    assert (
        decode_sample("k", {"feat.msgpack": features(0), "cls": b"9223372036854775807"}).label
        == (1 << 63) - 1
    )


@pytest.mark.parametrize("label", [b"1_000", b"+-3", b"", b"1e3", "٣".encode()])
def test_labels_must_be_plain_ascii_decimals(label):
    with pytest.raises(SampleError, match="not an ASCII integer"):
        decode_sample("k", {"feat.msgpack": features(0), "cls": label}, shard="t.tar")


def test_ustar_prefix_and_absolute_names_give_the_basename_key():
    data = archive(
        member("k0.feat.msgpack", features(0), prefix="some/dir"),
        member("/abs/k1.feat.msgpack", features(1)),
    )
    assert [k for k, _ in iter_sample_members(io.BytesIO(data), shard="t.tar")] == ["k0", "k1"]


def test_read_sample_at_reads_exactly_one_sample():
    first, second = sample("a", 0), sample("b", 1)
    data = archive(first, second)
    f = io.BytesIO(data)
    f.seek(len(first))
    key, got, _ = read_sample_at(f, shard="t.tar", start=len(first), stop=len(first) + len(second))
    assert key == "b" and sorted(got) == ["cls", "feat.msgpack"]
    f.seek(0)  # bytes that hold two samples are not one
    with pytest.raises(ShardReadError, match="not part of sample 'a'"):
        read_sample_at(f, shard="t.tar", start=0, stop=len(first) + len(second))
    f.seek(0)  # a region that stops before the sample does
    with pytest.raises(ShardReadError, match="goes on past byte 1024"):
        read_sample_at(f, shard="t.tar", start=0, stop=1024)
    f.seek(0)
    with pytest.raises(ShardReadError, match="crosses byte 512"):
        read_sample_at(f, shard="t.tar", start=0, stop=512)
