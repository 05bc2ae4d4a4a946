import numpy as np

from loffdata.format.stats import ChannelStats


def test_streaming_stats_match_numpy_and_merge_exactly():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((50, 6, 5, 5)) * rng.uniform(0.1, 100, (1, 6, 1, 1)) + 1e4
    a, b, whole = ChannelStats(), ChannelStats(), ChannelStats()
    for i in range(0, 30, 7):
        a.update(x[i : min(i + 7, 30)])
    b.update(x[30:])
    a.merge(b)
    whole.update(x)
    ref = x.transpose(1, 0, 2, 3).reshape(6, -1)
    np.testing.assert_allclose(a.mean, ref.mean(1), rtol=1e-12)
    np.testing.assert_allclose(a.std, ref.std(1), rtol=1e-9)
    np.testing.assert_allclose(whole.std, a.std, rtol=1e-9)
    assert a.count == 50 * 25


def test_dict_roundtrip_and_single_sample_update():
    s = ChannelStats()
    s.update(np.arange(12, dtype=np.float32).reshape(3, 2, 2), channel_axis=0)
    back = ChannelStats.from_dict(s.to_dict())
    np.testing.assert_allclose(back.std, s.std)
    np.testing.assert_allclose(back.mean, [1.5, 5.5, 9.5])
