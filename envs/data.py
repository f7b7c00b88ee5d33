"""Market data for the portfolio environment: loading, validation, date-based splits, crisis level.

Everything here is NumPy float64 and runs once, outside JAX; the environment receives the
result as JAX arrays (:func:`jaxstab.envs.portfolio.make_portfolio`).

Conventions
-----------
Prices ``P [T, N]`` on trading dates ``d_0 < ... < d_{T-1}``. The log return dated ``d_t`` is
``r_t = log(P_t / P_{t-1})`` (``t >= 1``): it is earned by holding from the close of ``d_{t-1}``
to the close of ``d_t``. The whole data set has ``T - 1`` log returns, row ``k`` of
``log_returns(data)`` being dated ``d_{k+1}``.

Which returns are "in" a split: a split ``[start, end]`` (inclusive calendar dates) contains
every log return dated ``start <= d_t <= end`` that has at least ``window`` earlier log returns
in the data set (the observation window). The weights for the return dated ``d_t`` are chosen
at the close of ``d_{t-1}``, which for the first return of a split is the last trading day
before ``start`` (so e.g. the default test split starts trading at the close of 2015-12-31 and
its first return is dated 2016-01-04). The observation for that decision reads the ``window``
log returns dated ``d_{t-window} .. d_{t-1}``, which lie before the split: a split reads up to
``history`` rows (``history >= window``; by default ``max(window, 252)`` where available) of
earlier returns, never later ones.

Crisis level (one number per return row, computed causally on the whole data set in float64):
with ``p_k = log(mean_i exp(r_{k,i}))`` the log return of the equal-weight (1/N, rebalanced
daily, before costs) index,

* ``s_k`` = population std of ``p`` over the last ``CRISIS_SHORT = 20`` rows (through ``k``),
  ``l_k`` = population std over the last ``CRISIS_LONG = 252`` rows (windows are shorter at the
  start of the data); ``v_k = clip(s_k / l_k - 1, 0, 1)`` (0 when short-run volatility is at or
  below its one-year level, 1 when it is twice as high or more; 0 if ``l_k = 0``);
* ``I_k = sum_{j<=k} p_j`` (log level of the index, ``I_{-1} = 0``), drawdown from the rolling
  one-year peak ``dd_k = 1 - exp(I_k - max(I_{k-251..k}, I_{-1} if in range))``;
  ``u_k = clip(dd_k / CRISIS_DRAWDOWN = 0.25, 0, 1)`` (a 25% drawdown saturates);
* ``crisis_k = (v_k + u_k) / 2`` in ``[0, 1]``.

The crisis level observed before trading for the return dated ``d_t`` is the one computed
through ``d_{t-1}``: it never looks ahead.
"""

from __future__ import annotations

import csv
import gzip
import io
import math
import os
from importlib import resources
from typing import Any, NamedTuple, Sequence

import numpy as np

__all__ = [
    "CRISIS_DRAWDOWN",
    "CRISIS_LONG",
    "CRISIS_SHORT",
    "DEFAULT_SPLITS",
    "MarketData",
    "SplitData",
    "crisis_level",
    "load_prices",
    "log_returns",
    "split",
]

CRISIS_SHORT = 20
CRISIS_LONG = 252
CRISIS_DRAWDOWN = 0.25
DEFAULT_HISTORY = 252

#: Default date ranges (inclusive). ``"all"`` is also accepted by :func:`split`.
DEFAULT_SPLITS: dict[str, tuple[str | None, str | None]] = {
    "train": (None, "2012-12-31"),
    "validation": ("2013-01-01", "2015-12-31"),
    "test": ("2016-01-01", "2022-12-31"),
}

BUNDLED_FILE = "sp500_20_daily.csv.gz"
_MISSING = {"", "na", "nan", "null", "none", "n/a", "#n/a", "-"}


class MarketData(NamedTuple):
    """A validated price table.

    Attributes:
      dates: ``[T]`` ``datetime64[D]``, strictly increasing.
      assets: asset names, length ``N``.
      prices: ``[T, N]`` float64, finite and strictly positive.
    """

    dates: np.ndarray
    assets: tuple[str, ...]
    prices: np.ndarray


class SplitData(NamedTuple):
    """The returns of one split plus the history its first observations need.

    Attributes:
      name: split name.
      dates: ``[S]`` ``datetime64[D]`` dates of the in-split returns.
      assets: asset names (``N``).
      log_returns: ``[H + S, N]`` float64; rows ``0..H-1`` are history (before the split),
        row ``H + k`` is the in-split return dated ``dates[k]``.
      crisis: ``[H + S]`` float64 crisis level computed through the same row.
      history: ``H`` (>= the ``window`` the split was made for).
    """

    name: str
    dates: np.ndarray
    assets: tuple[str, ...]
    log_returns: np.ndarray
    crisis: np.ndarray
    history: int


# ------------------------------------------------------------------------------------------
# loading


def _open_text(path: str) -> io.TextIOBase:
    with open(path, "rb") as f:
        magic = f.read(2)
    if magic == b"\x1f\x8b":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def _read_csv(path: str | None) -> tuple[list[str], list[list[str]], str]:
    """Header and rows of a CSV file (the bundled one if ``path`` is None)."""
    if path is None:
        ref = resources.files(__package__).joinpath("data", BUNDLED_FILE)
        raw = ref.read_bytes()
        text = io.TextIOWrapper(io.BytesIO(gzip.decompress(raw)), encoding="utf-8", newline="")
        label = f"bundled {BUNDLED_FILE}"
    else:
        if not os.path.exists(path):
            raise ValueError(f"source: file not found: {path!r}")
        text = _open_text(path)
        label = repr(path)
    with text:
        reader = csv.reader(text)
        try:
            header = next(reader)
        except StopIteration:
            raise ValueError(f"source {label}: empty CSV file") from None
        rows = [row for row in reader if row and any(c.strip() for c in row)]
    return [h.strip() for h in header], rows, label


def _parse_float(s: str) -> float:
    t = s.strip()
    if t.lower() in _MISSING:
        return math.nan
    return float(t)


def _validate_dates(dates: np.ndarray, label: str) -> None:
    if dates.size >= 2:
        diff = np.diff(dates).astype(np.int64)
        bad = np.flatnonzero(diff <= 0)
        if bad.size:
            i = int(bad[0])
            kind = "duplicate" if diff[i] == 0 else "unsorted (decreasing)"
            raise ValueError(f"{label}: {kind} dates: row {i + 1} ({dates[i]}) is followed by "
                             f"row {i + 2} ({dates[i + 1]}); dates must be strictly increasing")


def load_prices(source: str | os.PathLike | np.ndarray | Sequence | None = None, *,
                kind: str = "prices", date_column: str = "Date",
                columns: Sequence[str] | None = None, dates: Any = None,
                assets: Sequence[str] | None = None) -> MarketData:
    """Load and validate daily prices (or simple returns) into a :class:`MarketData`.

    ``kind="prices"``: values are prices, which must be finite and > 0.
    ``kind="returns"``: values are simple returns ``R_t = P_t / P_{t-1} - 1`` (> -1); they are
    turned into prices ``P_0 = 1``, ``P_t = prod_{s<=t} (1 + R_s)`` on a base row dated one day
    before the first date, so no return is lost.

    Args:
      source: None for the bundled 20-stock S&P 500 file (1990-2022); a path to a CSV file
        (plain or gzip-compressed) with a date column and one column per asset; or a ``[T, N]``
        array-like.
      kind: ``"prices"`` or ``"returns"``.
      date_column: name of the CSV date column (ISO ``YYYY-MM-DD``).
      columns: asset columns to keep, in this order (default: all non-date columns).
      dates: for an array source, ``[T]`` dates (anything ``np.datetime64`` parses); default
        consecutive calendar days from 2000-01-01.
      assets: for an array source, the asset names (default ``"asset0"...``).

    Returns:
      :class:`MarketData` with ``prices [T, N]`` float64 (T >= 2).

    Raises:
      ValueError: missing values (naming the column and the row/date), non-positive prices or
        returns <= -1, fewer than two rows, unknown ``columns``, no date column, unparsable or
        duplicate/unsorted dates, a bad ``kind``, wrong array rank.

    Example:
      >>> data = load_prices()
      >>> data.prices.shape[1], str(data.dates[0])
      (20, '1990-01-02')
    """
    if kind not in ("prices", "returns"):
        raise ValueError(f"kind must be 'prices' or 'returns', got {kind!r}")
    if source is None or isinstance(source, (str, os.PathLike)):
        path = None if source is None else os.fspath(source)
        header, rows, label = _read_csv(path)
        if date_column not in header:
            raise ValueError(f"source {label}: no date column {date_column!r}; the columns are "
                             f"{header} (pass date_column=...)")
        dcol = header.index(date_column)
        names = [h for i, h in enumerate(header) if i != dcol]
        if len(set(names)) != len(names):
            dup = sorted({n for n in names if names.count(n) > 1})
            raise ValueError(f"source {label}: duplicate column names {dup}")
        if columns is None:
            keep = names
        else:
            columns = list(columns)
            unknown = [c for c in columns if c not in names]
            if unknown:
                raise ValueError(f"columns: unknown columns {unknown} in {label}; available: "
                                 f"{names}")
            keep = columns
        if not keep:
            raise ValueError(f"source {label}: no asset columns")
        idx = [header.index(c) for c in keep]
        parsed_dates = []
        values = np.empty((len(rows), len(keep)), np.float64)
        for r, row in enumerate(rows):
            line = r + 2  # 1-based, after the header
            if len(row) != len(header):
                raise ValueError(f"source {label}: line {line} has {len(row)} fields, the header "
                                 f"has {len(header)}")
            ds = row[dcol].strip()
            try:
                parsed_dates.append(np.datetime64(ds, "D"))
            except ValueError:
                raise ValueError(f"source {label}: unparsable date {ds!r} in column "
                                 f"{date_column!r} at line {line}") from None
            for j, c in enumerate(idx):
                try:
                    values[r, j] = _parse_float(row[c])
                except ValueError:
                    raise ValueError(f"source {label}: non-numeric value {row[c]!r} in column "
                                     f"{keep[j]!r} at line {line} ({ds})") from None
        date_arr = np.array(parsed_dates, dtype="datetime64[D]")
        asset_names = tuple(keep)
    else:
        label = "source array"
        values = np.array(source, dtype=np.float64, copy=True)
        if values.ndim != 2:
            raise ValueError(f"source array must be 2-D [T, N], got shape {values.shape}")
        T, N = values.shape
        if dates is None:
            date_arr = np.datetime64("2000-01-01", "D") + np.arange(T)
        else:
            try:
                date_arr = np.asarray(dates).astype("datetime64[D]")
            except (ValueError, TypeError) as e:
                raise ValueError(f"dates: unparsable dates ({e})") from None
            if date_arr.shape != (T,):
                raise ValueError(f"dates must have shape ({T},), got {date_arr.shape}")
            if np.isnat(date_arr).any():
                raise ValueError(f"dates: missing date (NaT) at row "
                                 f"{int(np.flatnonzero(np.isnat(date_arr))[0])}")
        if assets is None:
            asset_names = tuple(f"asset{i}" for i in range(N))
        else:
            asset_names = tuple(str(a) for a in assets)
            if len(asset_names) != N:
                raise ValueError(f"assets has {len(asset_names)} names for {N} columns")
        if columns is not None:
            unknown = [c for c in columns if c not in asset_names]
            if unknown:
                raise ValueError(f"columns: unknown columns {unknown}; available: "
                                 f"{list(asset_names)}")
            sel = [asset_names.index(c) for c in columns]
            values = values[:, sel]
            asset_names = tuple(columns)

    _validate_dates(date_arr, label)
    T = values.shape[0]
    if T < 2:
        raise ValueError(f"{label}: too few rows ({T}); need at least 2 dates")
    bad = ~np.isfinite(values)
    if bad.any():
        r, c = map(int, np.argwhere(bad)[0])
        raise ValueError(f"{label}: missing value in column {asset_names[c]!r} at row {r} "
                         f"({date_arr[r]}); {int(bad.sum())} missing in total")
    if kind == "prices":
        nonpos = values <= 0
        if nonpos.any():
            r, c = map(int, np.argwhere(nonpos)[0])
            raise ValueError(f"{label}: non-positive price {values[r, c]} in column "
                             f"{asset_names[c]!r} at row {r} ({date_arr[r]})")
        prices = values
    else:
        low = values <= -1.0
        if low.any():
            r, c = map(int, np.argwhere(low)[0])
            raise ValueError(f"{label}: simple return {values[r, c]} <= -1 (non-positive price) "
                             f"in column {asset_names[c]!r} at row {r} ({date_arr[r]})")
        prices = np.exp(np.concatenate([np.zeros((1, values.shape[1])),
                                        np.cumsum(np.log1p(values), axis=0)]))
        date_arr = np.concatenate([date_arr[:1] - np.timedelta64(1, "D"), date_arr])
    return MarketData(dates=date_arr, assets=asset_names, prices=prices)


def log_returns(data: MarketData) -> np.ndarray:
    """``[T - 1, N]`` float64 log returns; row ``k`` is dated ``data.dates[k + 1]``."""
    return np.diff(np.log(data.prices), axis=0)


# ------------------------------------------------------------------------------------------
# crisis level


def crisis_level(log_rets: np.ndarray) -> np.ndarray:
    """Crisis level ``[T']`` in [0, 1] for log returns ``[T', N]`` (formula in the module doc).

    Args:
      log_rets: ``[T', N]`` float64 log returns in date order.

    Returns:
      ``[T']`` float64; entry ``k`` uses rows ``0..k`` only.
    """
    p = np.log(np.mean(np.exp(log_rets), axis=1))
    from numpy.lib.stride_tricks import sliding_window_view

    def rstd(n: int) -> np.ndarray:
        pad = np.concatenate([np.full(n - 1, np.nan), p])
        win = sliding_window_view(pad, n)
        return np.nanstd(win, axis=1)

    s = rstd(CRISIS_SHORT)
    l_ = rstd(CRISIS_LONG)
    ratio = np.divide(s, l_, out=np.ones_like(s), where=l_ > 0)
    v = np.clip(ratio - 1.0, 0.0, 1.0)
    level = np.concatenate([[0.0], np.cumsum(p)])  # I_{-1} = 0, I_0, ...
    win = sliding_window_view(np.concatenate([np.full(CRISIS_LONG - 1, -np.inf), level]),
                              CRISIS_LONG)  # win[j] covers level[j-251 .. j]
    peak = win.max(axis=1)[1:]  # for I_k (level index k+1): max of I_{k-251..k} (incl. I_{-1})
    dd = 1.0 - np.exp(level[1:] - peak)
    u = np.clip(dd / CRISIS_DRAWDOWN, 0.0, 1.0)
    return np.clip(0.5 * (v + u), 0.0, 1.0)


# ------------------------------------------------------------------------------------------
# splits


def _as_date(x: Any, what: str) -> np.datetime64 | None:
    if x is None:
        return None
    try:
        return np.datetime64(x, "D")
    except (ValueError, TypeError):
        raise ValueError(f"{what}: unparsable date {x!r}") from None


def split(data: MarketData, name: str = "train", *, window: int = 20,
          splits: dict[str, tuple[Any, Any]] | None = None,
          history: int | None = None) -> SplitData:
    """Cut one date-based split out of ``data`` (see the module docstring for what is "in").

    Args:
      data: a :class:`MarketData`.
      name: ``"train"``, ``"validation"``, ``"test"``, ``"all"`` (every return with a full
        window before it) or any key of ``splits``.
      window: observation window (number of past log returns the environment shows).
      splits: ``{name: (start, end)}`` inclusive dates (None = open end); default
        :data:`DEFAULT_SPLITS`. Entries given here replace the defaults of the same name.
      history: rows of earlier returns to include (>= ``window``); default
        ``max(window, 252)``, cut to what the data has (but never below ``window``).

    Returns:
      :class:`SplitData`.

    Raises:
      ValueError: unknown split name, bad dates, ``window < 1``, too few rows for the window,
        or a split with no returns.

    Example:
      >>> sd = split(load_prices(), "test", window=20)
      >>> str(sd.dates[0]), sd.history
      ('2016-01-04', 252)
    """
    if not isinstance(window, (int, np.integer)) or isinstance(window, bool) or window < 1:
        raise ValueError(f"window must be an int >= 1, got {window!r}")
    window = int(window)
    table = dict(DEFAULT_SPLITS)
    if splits is not None:
        table.update(splits)
    table.setdefault("all", (None, None))
    if name not in table:
        raise ValueError(f"split: unknown split {name!r}; valid: {sorted(table)}")
    start, end = (_as_date(d, f"splits[{name!r}]") for d in table[name])
    if start is not None and end is not None and end < start:
        raise ValueError(f"splits[{name!r}]: end {end} is before start {start}")
    lr = log_returns(data)
    if lr.shape[0] <= window:
        raise ValueError(f"too few rows for window={window}: {data.prices.shape[0]} price rows "
                         f"give {lr.shape[0]} returns; need at least window + 2 = {window + 2} "
                         f"price rows")
    rdates = data.dates[1:]
    inside = np.ones(rdates.shape, bool)
    if start is not None:
        inside &= rdates >= start
    if end is not None:
        inside &= rdates <= end
    inside[:window] = False
    idx = np.flatnonzero(inside)
    if idx.size == 0:
        raise ValueError(f"split {name!r} ({start} .. {end}) has no returns with {window} "
                         f"earlier returns in the data ({data.dates[0]} .. {data.dates[-1]}); "
                         f"too few rows for the window or dates outside the data")
    first, last = int(idx[0]), int(idx[-1])
    if history is None:
        history = max(window, DEFAULT_HISTORY)
    if history < window:
        raise ValueError(f"history ({history}) must be >= window ({window})")
    h = min(int(history), first)
    h = max(h, window)
    crisis = crisis_level(lr)
    return SplitData(name=name, dates=rdates[first:last + 1], assets=data.assets,
                     log_returns=lr[first - h:last + 1], crisis=crisis[first - h:last + 1],
                     history=h)
