"""No secret in any message, log line or file loffdata writes (issue 22, item 5).

A password in URL userinfo, an S3 key/secret/token and an Authorization header are planted
in URLs and storage options; the loader's error paths (missing manifest, missing shard,
retries), ``inspect``, ``convert``, extraction (tools/shard.py's library, a tiny random
timm model) and the training recipe run; every message, warning, log record and every file
they wrote is searched for the secrets.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import pytest

from loffdata.cli.main import main as cli_main
from loffdata.errors import LoffError, SampleError
from loffdata.redact import is_secret_key, redact, redact_text
from loffdata.storage.retry import RetryConfig
from loffdata.stream.dataset import StreamingDataset
from loffdata.stream.streamconfig import StreamConfig
from tests.servers import http_server, s3_server  # noqa: F401

PASSWORD, KEY, SECRET, TOKEN, BEARER = (
    "pw-Hunter2x",
    "AKIAPLANTED77",
    "s3-SECRET-planted",
    "tok-PLANTED-9",
    "bearer-PLANTED-1",
)
SECRETS = (PASSWORD, KEY, SECRET, TOKEN, BEARER)
S3_SECRETS = {"key": KEY, "secret": SECRET, "token": TOKEN}


def _clean(text: str | bytes, where: str) -> None:
    data = text.encode() if isinstance(text, str) else text
    leaked = [s for s in SECRETS if s.encode() in data]
    assert not leaked, f"{where} holds {leaked}"


def _clean_tree(root: Path) -> int:
    files = [p for p in root.rglob("*") if p.is_file()]
    for p in files:
        _clean(p.read_bytes(), str(p))
    return len(files)


def _with_password(url: str) -> str:
    scheme, rest = url.split("://", 1)
    return f"{scheme}://user:{PASSWORD}@{rest}"


@pytest.mark.parametrize(
    "text",
    [
        f"http://user:{PASSWORD}@h/x",
        f"{{'key': '{KEY}', 'secret': '{SECRET}', 'token': '{TOKEN}'}}",
        f"headers: {{Authorization: Bearer {BEARER}}}",
        f"https://h/o?X-Amz-Security-Token={TOKEN}&a=1",
        f"aws_secret_access_key={SECRET}",
        # signed URLs of the object stores: Azure SAS, GCS V4, S3 presigned
        f"https://a.blob.core.windows.net/c/x.tar?sv=2022-11-02&sig={TOKEN}&se=2030",
        f"https://storage.googleapis.com/b/x.tar?X-Goog-Signature={TOKEN}&X-Goog-Date=1",
        f"https://b.s3.amazonaws.com/x.tar?X-Amz-Signature={TOKEN}&X-Amz-Expires=60",
    ],
)
def test_the_rule_on_text(text):
    _clean(redact_text(text), text)


def test_the_rule_on_nested_mappings_keeps_sample_keys():
    opts = {
        "key": KEY,
        "client_kwargs": {"endpoint_url": _with_password("http://h"), "aws_session_token": TOKEN},
        "headers": {"Authorization": f"Bearer {BEARER}"},
        "keys": ["k0"],
        "profile": "prod",
        "token": None,
    }
    out = redact(opts)
    _clean(repr(out), "redact()")
    assert out["keys"] == ["k0"] and out["profile"] == "prod" and out["token"] is None
    assert (
        not is_secret_key("keys")
        and not is_secret_key("num_tokens")
        and is_secret_key("secretAccessKey")
    )
    err = SampleError("bad", shard=_with_password("http://h/a.tar"), key="k0")
    assert (
        err.key == "k0"
        and "key='k0'" in str(err)
        and PASSWORD not in str(err) + repr(err) + err.shard
    )


def test_loader_error_paths_over_http(make_dataset, http_server, caplog, capsys):  # noqa: F811
    root, m = make_dataset(6, 3)
    root.rename(root.parent / "www" / "ds")  # the server serves tmp_path / "www"
    http_server.faults.statuses[m.shards[1].name] = [
        503
    ] * 10  # retried (a logged warning), then an error
    url = _with_password(f"{http_server.url}/ds")
    messages = []
    caplog.set_level(logging.DEBUG)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        header = {"headers": {"Authorization": f"Bearer {BEARER}"}}  # aiohttp: a header or userinfo
        for source, options in (
            (f"{url}/missing", {}),
            (url, {}),
            (f"{http_server.url}/ds", header),
        ):
            try:
                list(
                    StreamingDataset(
                        source,
                        batch_size=2,
                        retry=RetryConfig(attempts=2, backoff=0.0),
                        storage_options=options,
                    )
                )
            except LoffError as err:
                messages += [str(err), repr(err)]
        for command in ("inspect", "verify"):
            with pytest.raises(SystemExit):
                cli_main([command, f"{url}/missing"])
    captured = capsys.readouterr()
    assert (
        len(messages) == 6 and "no manifest" in messages[0] and "503" in messages[2] + messages[4]
    ), messages
    assert any("retrying" in r.getMessage() for r in caplog.records)
    _clean("\n".join(messages), "error messages")
    _clean(captured.out + captured.err, "CLI output")
    _clean("\n".join(r.getMessage() for r in caplog.records), "log records")
    _clean("\n".join(str(w.message) for w in caught), "warnings")


def test_loader_error_paths_on_s3(make_dataset, s3_server, caplog):  # noqa: F811
    root, m = make_dataset(6, 3)
    url = s3_server.upload(root, "redact", "ds")
    s3_server.filesystem().rm(f"redact/ds/{m.shards[1].name}")
    options = {**s3_server.storage_options, **S3_SECRETS}
    caplog.set_level(logging.DEBUG)
    messages = []
    for source in (f"{url}/missing", url):
        with pytest.raises(LoffError) as err:
            list(
                StreamingDataset(
                    source,
                    batch_size=2,
                    storage_options=options,
                    retry=RetryConfig(attempts=2, backoff=0.0),
                )
            )
        messages += [str(err.value), repr(err.value)]
    _clean("\n".join(messages), "error messages")
    _clean("\n".join(r.getMessage() for r in caplog.records), "log records")


def test_convert_writes_no_secret(make_dataset, http_server, tmp_path, capsys):  # noqa: F811
    from loffdata.ops.convert import ConvertConfig, convert

    root, _ = make_dataset(6, 3)
    root.rename(tmp_path / "www" / "ds")
    src = _with_password(f"{http_server.url}/ds")
    options = {"headers": {"X-Api-Key": BEARER}}
    m = convert(
        src, str(tmp_path / "out"), ConvertConfig(pool=2), src_options=options, progress=False
    )
    assert m.source["converted_from"].startswith("http://***@")
    again = convert(
        src, str(tmp_path / "out"), ConvertConfig(pool=2), src_options=options, progress=False
    )
    assert again.num_samples == 6  # the resume check compares the redacted record
    assert _clean_tree(tmp_path / "out") >= 4
    cli_main(["inspect", str(tmp_path / "out")])
    _clean(capsys.readouterr().out, "inspect")


def test_extraction_writes_no_secret(tmp_path):
    from loffdata.extract.pipeline import ExtractConfig, RandomWeightsWarning, extract

    cfg = ExtractConfig(
        out=str(tmp_path / "feats"),
        model="test_resnet",
        img_size=64,
        shapes_counts={"train": 3},
        workers=0,
        batch_size=3,
        progress=False,
        storage_options={**S3_SECRETS},
        endpoint_url=_with_password("http://127.0.0.1:9"),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)
        extract(cfg)
    record = (tmp_path / "feats" / "extract_config.json").read_text()
    assert '"token": "***"' in record and "http://***@127.0.0.1:9" in record
    assert _clean_tree(tmp_path / "feats") >= 3


@pytest.mark.filterwarnings("ignore::loffdata.train.run.FewStepsWarning")
def test_the_recipe_writes_no_secret(make_dataset, http_server, tmp_path):  # noqa: F811
    from loffdata.train.trainer import CHECKPOINT_NAME, TrainConfig, train

    root, _ = make_dataset(24, 8, shape=(16, 4, 4))
    root.rename(tmp_path / "www" / "ds")
    url = _with_password(f"{http_server.url}/ds")
    stream = StreamConfig(storage_options={"headers": {"X-Api-Key": BEARER}, "client_kwargs": {}})
    common = dict(
        train=url,
        val=url,
        out=str(tmp_path / "run"),
        model="deit_t",
        depth=1,
        embed_dim=32,
        num_heads=2,
        batch_size=8,
        num_workers=0,
        device="cpu",
        progress=False,
        stream=stream,
    )
    train(TrainConfig(**common, epochs=1))
    assert (tmp_path / "run" / CHECKPOINT_NAME).exists()
    assert _clean_tree(tmp_path / "run") >= 3
    train(TrainConfig(**common, resume=True, epochs=2))  # resuming compares the redacted config
    with pytest.raises(LoffError, match="cannot resume"):
        train(TrainConfig(**{**common, "lr": 0.5}, resume=True, epochs=2))
