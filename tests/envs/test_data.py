"""Data loading, validation errors, splits and the crisis level (vs independent NumPy code)."""

import csv
import gzip
import os

import numpy as np
import pytest

from jaxstab.envs import data as D

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CSV = os.path.join(ROOT, "envs", "data", "sp500_20_daily.csv.gz")


def _raw():
    """Independent read of the bundled file: header, dates (str), prices float64."""
    with gzip.open(CSV, "rt") as f:
        rows = list(csv.reader(f))
    header, body = rows[0], rows[1:]
    dates = np.array([r[0] for r in body], dtype="datetime64[D]")
    prices = np.array([[float(x) for x in r[1:]] for r in body])
    return header, dates, prices


@pytest.fixture(scope="module")
def raw():
    return _raw()


@pytest.fixture(scope="module")
def data():
    return D.load_prices()


def test_bundled_matches_raw_file(raw, data):
    header, dates, prices = raw
    assert data.assets == tuple(header[1:])
    assert len(data.assets) == 20
    np.testing.assert_array_equal(data.dates, dates)
    np.testing.assert_array_equal(data.prices, prices)
    assert data.prices.dtype == np.float64 and data.dates.dtype == np.dtype("datetime64[D]")
    assert str(data.dates[0]) == "1990-01-02" and str(data.dates[-1]) == "2022-12-28"


def test_path_gz_plain_and_columns(tmp_path, data):
    plain = tmp_path / "p.csv"
    with gzip.open(CSV, "rb") as f:
        plain.write_bytes(f.read())
    a = D.load_prices(str(plain), columns=["MSFT", "AAPL"])
    b = D.load_prices(CSV, columns=["MSFT", "AAPL"])
    assert a.assets == ("MSFT", "AAPL")
    np.testing.assert_array_equal(a.prices, b.prices)
    np.testing.assert_array_equal(a.prices[:, 1], data.prices[:, data.assets.index("AAPL")])


def test_returns_kind_and_array_source(tmp_path):
    rng = np.random.default_rng(0)
    rets = rng.normal(0.0, 0.02, (30, 3))
    dates = np.datetime64("2020-01-01") + np.arange(30)
    p = tmp_path / "r.csv"
    with open(p, "w") as f:
        f.write("day,a,b,c\n")
        for d, r in zip(dates, rets):
            f.write(f"{d}," + ",".join(repr(float(x)) for x in r) + "\n")
    md = D.load_prices(str(p), kind="returns", date_column="day")
    assert md.prices.shape == (31, 3)
    assert md.dates[0] == np.datetime64("2019-12-31")
    np.testing.assert_allclose(md.prices[1:] / md.prices[:-1] - 1.0, rets, rtol=1e-10, atol=1e-13)
    arr = D.load_prices(np.exp(np.cumsum(rets, axis=0)), assets=["x", "y", "z"], columns=["z"])
    assert arr.assets == ("z",) and arr.prices.shape == (30, 1)
    assert arr.dates[0] == np.datetime64("2000-01-01")


def _write(tmp_path, text, name="bad.csv"):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


GOOD = "Date,A,B\n2020-01-01,1,2\n2020-01-02,1.1,2.1\n2020-01-03,1.2,2.0\n"


@pytest.mark.parametrize("text,match", [
    ("Date,A,B\n2020-01-01,1,2\n2020-01-02,,2.1\n", r"missing value in column 'A' at row 1 \(2020-01-02\)"),
    ("Date,A,B\n2020-01-01,1,2\n2020-01-02,1,NaN\n", r"missing value in column 'B'"),
    ("Date,A,B\n2020-01-01,1,2\n2020-01-02,0,2.1\n", r"non-positive price 0.0 in column 'A'"),
    ("Date,A,B\n2020-01-01,1,2\n2020-01-02,1,-3\n", r"non-positive price -3.0 in column 'B'"),
    ("Day,A,B\n2020-01-01,1,2\n2020-01-02,1,2\n", r"no date column 'Date'"),
    ("Date,A,B\n2020-01-01,1,2\n2020-13-45,1,2\n", r"unparsable date '2020-13-45'"),
    ("Date,A,B\n2020-01-01,1,2\n2020-01-01,1,2\n", r"duplicate dates"),
    ("Date,A,B\n2020-01-02,1,2\n2020-01-01,1,2\n", r"unsorted"),
    ("Date,A,B\n2020-01-01,1,2\n", r"too few rows"),
    ("Date,A,B\n2020-01-01,1,2\n2020-01-02,1,abc\n", r"non-numeric value 'abc' in column 'B'"),
])
def test_loader_errors(tmp_path, text, match):
    with pytest.raises(ValueError, match=match):
        D.load_prices(_write(tmp_path, text))


def test_loader_errors_arguments(tmp_path):
    path = _write(tmp_path, GOOD)
    with pytest.raises(ValueError, match=r"unknown columns \['C'\]"):
        D.load_prices(path, columns=["A", "C"])
    with pytest.raises(ValueError, match="kind must be"):
        D.load_prices(path, kind="logprices")
    with pytest.raises(ValueError, match="file not found"):
        D.load_prices(str(tmp_path / "nope.csv"))
    with pytest.raises(ValueError, match=r"<= -1"):
        D.load_prices(_write(tmp_path, "Date,A\n2020-01-01,0.1\n2020-01-02,-1.0\n", "r.csv"),
                      kind="returns")
    with pytest.raises(ValueError, match="2-D"):
        D.load_prices(np.ones(5))
    with pytest.raises(ValueError, match=r"missing value in column 'asset1' at row 2"):
        D.load_prices(np.array([[1.0, 1.0], [1.0, 1.0], [1.0, np.nan]]))
    with pytest.raises(ValueError, match="unknown columns"):
        D.load_prices(np.ones((4, 2)), columns=["q"])
    with pytest.raises(ValueError, match="duplicate dates"):
        D.load_prices(np.ones((3, 1)), dates=["2020-01-01", "2020-01-02", "2020-01-02"])
    with pytest.raises(ValueError, match="unparsable"):
        D.load_prices(np.ones((2, 1)), dates=["2020-01-01", "not a date"])


def test_too_few_rows_for_window(tmp_path):
    md = D.load_prices(_write(tmp_path, GOOD))  # 3 prices -> 2 returns
    with pytest.raises(ValueError, match="too few rows for window=2"):
        D.split(md, "all", window=2)
    sd = D.split(md, "all", window=1)
    assert sd.dates.shape == (1,)
    with pytest.raises(ValueError, match="window must be"):
        D.split(md, "all", window=0)
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        D.split(md, "dev", window=1)
    with pytest.raises(ValueError, match="has no returns"):
        D.split(md, "train", window=1)


def test_default_splits(data):
    lr_all = np.log(data.prices[1:] / data.prices[:-1])
    rdates = data.dates[1:]
    seen = []
    for name, lo, hi in [("train", None, "2012-12-31"), ("validation", "2013-01-01", "2015-12-31"),
                         ("test", "2016-01-01", "2022-12-31")]:
        sd = D.split(data, name, window=20)
        sel = np.ones(rdates.shape, bool)
        if lo:
            sel &= rdates >= np.datetime64(lo)
        if hi:
            sel &= rdates <= np.datetime64(hi)
        sel[:20] = False
        np.testing.assert_array_equal(sd.dates, rdates[sel])
        first = int(np.flatnonzero(sel)[0])
        h = sd.history
        assert h == (20 if name == "train" else 252)
        # rows are exactly the returns from `history` rows before the split to its end
        np.testing.assert_allclose(sd.log_returns, lr_all[first - h:first + sd.dates.size],
                                   rtol=1e-12, atol=1e-15)
        seen.append(sd.dates)
    assert str(seen[2][0]) == "2016-01-04" and str(seen[2][-1]) == "2022-12-28"
    assert str(seen[1][0]) == "2013-01-02" and str(seen[1][-1]) == "2015-12-31"
    assert seen[0][-1] < seen[1][0] and seen[1][-1] < seen[2][0]
    # custom ranges override the defaults
    sd = D.split(data, "test", splits={"test": ("2020-02-01", "2020-04-30")})
    assert str(sd.dates[0]) == "2020-02-03" and str(sd.dates[-1]) == "2020-04-30"


def test_crisis_level_independent(data):
    lr = np.log(data.prices[1:] / data.prices[:-1])
    c = D.crisis_level(lr)
    assert c.shape == (lr.shape[0],)
    assert np.all((c >= 0) & (c <= 1)) and np.isfinite(c).all()
    # direct, loop-based re-computation at a few rows
    p = np.log(np.exp(lr).mean(axis=1))
    level = np.cumsum(p)
    rng = np.random.default_rng(1)
    for k in list(rng.integers(0, lr.shape[0], 40)) + [0, 1, 19, 251, 252]:
        s = np.std(p[max(0, k - 19):k + 1])
        l_ = np.std(p[max(0, k - 251):k + 1])
        v = 0.0 if l_ == 0 else min(max(s / l_ - 1.0, 0.0), 1.0)
        cands = list(level[max(0, k - 251):k + 1]) + ([0.0] if k - 251 <= -1 else [])
        dd = 1.0 - np.exp(level[k] - max(cands))
        u = min(max(dd / 0.25, 0.0), 1.0)
        np.testing.assert_allclose(c[k], 0.5 * (v + u), atol=1e-9, err_msg=f"row {k}")
    # the 2020 crash saturates it; a calm period stays low
    dates = data.dates[1:]
    crash = (dates >= np.datetime64("2020-03-16")) & (dates <= np.datetime64("2020-03-31"))
    assert c[crash].min() > 0.85
    calm = (dates >= np.datetime64("2017-01-01")) & (dates <= np.datetime64("2017-12-31"))
    assert c[calm].mean() < 0.3
