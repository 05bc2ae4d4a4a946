"""The async HTTP clients compared by ``bench_clients.py`` (and used by ``bench_loader.py``'s
"range GETs, no decoding" row): each fetches shards in ``block`` byte ranges with ``depth``
requests in flight and returns the bytes fetched."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor


def _ranges(urls: list[str], sizes: list[int], block: int) -> list[tuple[str, int, int]]:
    return [(u, s, min(n, s + block)) for u, n in zip(urls, sizes) for s in range(0, n, block)]


def fsspec_async(urls: list[str], sizes: list[int], block: int, depth: int) -> int:
    from fsspec.asyn import sync

    from loffdata.storage.pinned import Pin, fetch_range
    from loffdata.storage.retry import RetryConfig
    from loffdata.storage.shardfile import filesystem

    fs, _ = filesystem(urls[0], None, RetryConfig())
    pins = {u: Pin(u) for u in urls}

    async def run() -> int:
        sem = asyncio.Semaphore(depth)

        async def one(u: str, s: int, e: int) -> int:
            async with sem:
                return len(await fetch_range(fs, u, s, e, pins[u]))

        return sum(await asyncio.gather(*(one(*r) for r in _ranges(urls, sizes, block))))

    return sync(fs.loop, run)


def fsspec_threads(urls: list[str], sizes: list[int], block: int, depth: int) -> int:
    from loffdata.storage.retry import RetryConfig
    from loffdata.storage.shardfile import filesystem

    fs, _ = filesystem(urls[0], None, RetryConfig())
    with ThreadPoolExecutor(depth) as pool:
        return sum(
            pool.map(
                lambda r: len(fs.cat_file(r[0], start=r[1], end=r[2])), _ranges(urls, sizes, block)
            )
        )


def obstore_async(urls: list[str], sizes: list[int], block: int, depth: int) -> int:
    import obstore
    from obstore.store import HTTPStore

    base = urls[0].rsplit("/", 1)[0]
    store = HTTPStore.from_url(base, client_options={"allow_http": True})

    async def run() -> int:
        sem = asyncio.Semaphore(depth)

        async def one(u: str, s: int, e: int) -> int:
            async with sem:
                return len(
                    await obstore.get_range_async(store, u.rsplit("/", 1)[1], start=s, end=e)
                )

        return sum(await asyncio.gather(*(one(*r) for r in _ranges(urls, sizes, block))))

    return asyncio.run(run())


CLIENTS = {"fsspec-async": fsspec_async, "fsspec-threads": fsspec_threads, "obstore": obstore_async}
