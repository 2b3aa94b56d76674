"""Plotly figures and display tables for the dashboard.

Pure functions of plain data (arrays, DataFrames, floats): no Streamlit, no metric
computation. Numbers come from ``fusion``; this module only bins, orders and draws them,
so every builder can be tested without a browser. Builders that summarise many points
(histograms, ECDFs) return the binned data as a DataFrame too, for the CSV download.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

FRONT_COLOR = "#d62728"
FEASIBLE_COLOR = "#1f77b4"
INFEASIBLE_COLOR = "#c7c7c7"
BASELINE_COLOR = "#111111"

# Candidate status, in drawing order (front last, on top).
STATUSES = ("infeasible", "dominated", "front")
_STATUS_COLORS = {"infeasible": INFEASIBLE_COLOR, "dominated": FEASIBLE_COLOR, "front": FRONT_COLOR}


# --- distributions -----------------------------------------------------------------------
def histogram_data(
    series: Mapping[str, np.ndarray], *, bins: int = 50, log_x: bool = False
) -> pd.DataFrame:
    """Bin every series on shared edges.

    Parameters
    ----------
    series : mapping of name -> 1-D array
        E.g. one objective's scores, or its scores split by a slice.
    bins : int
        Number of bins over the range of all finite values.
    log_x : bool
        Geometric bin edges over the positive values; values <= 0 cannot be drawn on a log
        axis and are left out of every bin (their share is missing from the series' total).

    Returns
    -------
    DataFrame with columns ``series, left, right, count, share``; ``share`` is the count
    over the series' number of finite values. Empty when no value can be binned.
    """
    clean = {name: _drawable(np.asarray(values, dtype=np.float64), log_x)
             for name, values in series.items()}
    pooled = [values for values, _ in clean.values() if values.size]
    columns = ["series", "left", "right", "count", "share"]
    if not pooled:
        return pd.DataFrame(columns=columns)
    low = min(float(v.min()) for v in pooled)
    high = max(float(v.max()) for v in pooled)
    edges = _edges(low, high, bins, log_x)
    frames = []
    for name, (values, total) in clean.items():
        counts, _ = np.histogram(values, bins=edges)
        frames.append(pd.DataFrame({
            "series": name,
            "left": edges[:-1],
            "right": edges[1:],
            "count": counts,
            "share": counts / total if total else np.zeros_like(counts, dtype=np.float64),
        }))
    return pd.concat(frames, ignore_index=True)[columns]


def _drawable(values: np.ndarray, log_x: bool) -> tuple[np.ndarray, int]:
    finite = values[np.isfinite(values)]
    return (finite[finite > 0] if log_x else finite), int(finite.size)


def _edges(low: float, high: float, bins: int, log_x: bool) -> np.ndarray:
    if log_x:
        if high <= low:
            return np.array([low / 2, low * 2])
        return np.geomspace(low, high, bins + 1)
    if high <= low:
        return np.array([low - 0.5, low + 0.5])
    return np.linspace(low, high, bins + 1)


def histogram_figure(data: pd.DataFrame, *, x_title: str, log_x: bool = False,
                     title: str | None = None) -> go.Figure:
    """Step curves of each series' share per bin (from :func:`histogram_data`).

    Steps rather than bars: they overlay cleanly when split by a slice and keep their
    widths on a log axis.
    """
    figure = go.Figure()
    for name, group in data.groupby("series", sort=False):
        x = np.append(group["left"].to_numpy(), group["right"].to_numpy()[-1:])
        y = np.append(group["share"].to_numpy(), group["share"].to_numpy()[-1:])
        figure.add_trace(go.Scatter(
            x=x, y=y, name=str(name), mode="lines", line={"shape": "hv"},
            hovertemplate="from %{x:.4g}<br>share %{y:.2%}<extra>%{fullData.name}</extra>",
        ))
    figure.update_layout(title=title, xaxis_title=x_title, yaxis_title="share of rows",
                         yaxis_tickformat=".0%", showlegend=data["series"].nunique() > 1,
                         margin={"t": 40 if title else 10})
    if log_x:
        figure.update_xaxes(type="log")
    return figure


def ecdf_data(series: Mapping[str, np.ndarray], *, points: int = 201) -> pd.DataFrame:
    """Each series' empirical CDF at ``points`` evenly spaced fractions (its quantiles).

    Returns a DataFrame with columns ``series, value, fraction``: the ``fraction`` quantile
    of the series' finite values (linear interpolation). A series without finite values
    contributes no row.
    """
    fractions = np.linspace(0.0, 1.0, points)
    frames = []
    for name, values in series.items():
        values = np.asarray(values, dtype=np.float64)
        values = values[np.isfinite(values)]
        if values.size:
            frames.append(pd.DataFrame({"series": name, "value": np.quantile(values, fractions),
                                        "fraction": fractions}))
    if not frames:
        return pd.DataFrame(columns=["series", "value", "fraction"])
    return pd.concat(frames, ignore_index=True)


def ecdf_figure(data: pd.DataFrame, *, x_title: str, log_x: bool = False,
                title: str | None = None) -> go.Figure:
    """Lines of the fraction of rows with a value <= x (from :func:`ecdf_data`)."""
    figure = go.Figure()
    for name, group in data.groupby("series", sort=False):
        figure.add_trace(go.Scatter(
            x=group["value"], y=group["fraction"], name=str(name), mode="lines",
            hovertemplate="%{x:.4g}: %{y:.1%} of rows at or below<extra>%{fullData.name}</extra>",
        ))
    figure.update_layout(title=title, xaxis_title=x_title, yaxis_title="fraction of rows",
                         yaxis_tickformat=".0%", showlegend=data["series"].nunique() > 1,
                         margin={"t": 40 if title else 10})
    if log_x:
        figure.update_xaxes(type="log")
    return figure


def reliability_figure(curve: pd.DataFrame, *, ece: float, objective: str,
                       graded: bool = False) -> go.Figure:
    """Observed outcome against mean score per bin, with the diagonal of perfect calibration.

    Parameters
    ----------
    curve : DataFrame
        One row per non-empty bin, as ``fusion.explore.reliability_curve`` returns it
        (``mean_score``, ``positive_rate``, ``mean_label``, ``count``).
    ece : float
        Expected calibration error, shown in the title.
    graded : bool
        The observed outcome is the mean label (e.g. seconds) rather than the positive rate.
    """
    observed = "mean_label" if graded else "positive_rate"
    observed_name = "mean label" if graded else "observed positive rate"
    top = float(max(curve["mean_score"].max(), curve[observed].max())) if len(curve) else 1.0
    figure = go.Figure()
    figure.add_trace(go.Scatter(x=[0, top], y=[0, top], mode="lines", name="perfectly calibrated",
                                line={"dash": "dot", "color": "grey"}, hoverinfo="skip"))
    figure.add_trace(go.Scatter(
        x=curve["mean_score"], y=curve[observed], mode="lines+markers", name=objective,
        customdata=curve["count"],
        hovertemplate=f"mean score %{{x:.4g}}<br>{observed_name} %{{y:.4g}}<br>"
                      "%{customdata} rows<extra></extra>",
    ))
    figure.update_layout(title=f"{objective}: reliability (ECE {ece:.4g})",
                         xaxis_title="mean predicted score", yaxis_title=observed_name,
                         margin={"t": 40})
    return figure


def correlation_figure(matrix: pd.DataFrame, *, title: str | None = None) -> go.Figure:
    """Heatmap of a square correlation matrix (rows and columns labelled), values in [-1, 1]."""
    values = matrix.to_numpy(dtype=np.float64)
    figure = go.Figure(go.Heatmap(
        z=values, x=list(matrix.columns), y=list(matrix.index), zmin=-1, zmax=1,
        colorscale="RdBu", reversescale=True,
        text=np.vectorize(lambda v: "" if math.isnan(v) else f"{v:.2f}")(values),
        texttemplate="%{text}", hovertemplate="%{y} / %{x}: %{z:.3f}<extra></extra>",
    ))
    figure.update_layout(title=title, yaxis_autorange="reversed", margin={"t": 40 if title else 10})
    return figure


# --- metrics tables and text -------------------------------------------------------------
def metric_table(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per objective: each metric's value and its relative change vs the baseline.

    Parameters
    ----------
    frame : DataFrame
        Tidy metrics as ``EvaluationResult.to_frame()`` returns them (``objective, metric,
        value, delta``; ``delta`` the relative change, NaN without a baseline).

    Returns
    -------
    DataFrame indexed by objective (in first-seen order) with, per metric, a column
    ``<metric>`` and a column ``<metric> Δ`` (relative change, e.g. 0.012 for +1.2 %).
    """
    # Plain dicts rather than a pivot: this runs on every weight move.
    cells: dict[str, dict[str, float]] = {}
    for objective, metric, value, delta in zip(frame["objective"], frame["metric"],
                                               frame["value"], frame["delta"]):
        row = cells.setdefault(objective, {})
        row[metric], row[f"{metric} Δ"] = value, delta
    table = pd.DataFrame.from_dict(cells, orient="index")
    table.index.name = "objective"
    return table


def format_metric_table(table: pd.DataFrame) -> pd.DataFrame:
    """:func:`metric_table` as display text: values to 4 decimals, changes as signed
    percentages in Markdown colour (green a gain, red a loss) for ``st.table``.

    Text rather than a pandas Styler: it is rebuilt on every weight move and a Styler costs
    ten times as much to render.
    """
    shown = pd.DataFrame(index=table.index)
    for column in table.columns:
        if column.endswith(" Δ"):
            shown[column] = [delta_markdown(v) for v in table[column]]
        else:
            shown[column] = ["–" if not np.isfinite(v) else f"{v:.4f}" for v in table[column]]
    return shown


def delta_markdown(value: float) -> str:
    """A relative change as Markdown: ``":green[+1.2%]"``, ``":red[-0.3%]"``, or plain text."""
    text = format_relative(value)
    if value is None or not np.isfinite(value) or value == 0:
        return text
    return f":{'green' if value > 0 else 'red'}[{text}]"


def format_relative(value: float) -> str:
    """A relative change as a signed percentage: ``-0.003`` -> ``"-0.3%"``; NaN -> ``"–"``."""
    if value is None or not np.isfinite(value):
        return "–"
    percent = 100.0 * value
    digits = 1 if abs(percent) >= 0.1 or percent == 0 else 2
    return f"{percent:+.{digits}f}%"


def describe_changes(frame: pd.DataFrame, *, metrics: Sequence[str] | None = None) -> str:
    """Plain-language summary of the change vs the baseline.

    ``"click gauc -0.3%, conversion gauc +1.2%"``: one ``<objective> <metric> <change>`` per
    row of ``frame`` (tidy, as ``EvaluationResult.to_frame()``), in its order, optionally
    only for ``metrics``. Rows without a finite delta are left out; an empty string means
    no row had one.
    """
    rows = frame if metrics is None else frame[frame["metric"].isin(list(metrics))]
    parts = [f"{row.objective} {row.metric} {format_relative(row.delta)}"
             for row in rows.itertuples(index=False)
             if row.delta is not None and np.isfinite(row.delta)]
    return ", ".join(parts)


def reevaluation_table(exported: pd.DataFrame, recomputed: pd.DataFrame) -> pd.DataFrame:
    """A config's stored metric values next to the same metrics re-evaluated on other logs.

    Both frames are tidy (``objective, metric, value``); rows follow ``recomputed``. The
    stored value is NaN where the config has none.
    """
    stored = exported.set_index(["objective", "metric"])["value"] if len(exported) else None
    table = recomputed[["objective", "metric", "value"]].rename(columns={"value": "now"})
    keys = list(zip(table["objective"], table["metric"]))
    table.insert(2, "exported", [float(stored.get(k, float("nan"))) if stored is not None
                                 else float("nan") for k in keys])
    return table.set_index(["objective", "metric"])


def format_weights(weights: Mapping[str, float]) -> str:
    """``{"click": 0.5, "like": 0.25}`` -> ``"click 0.500 · like 0.250"``."""
    return " · ".join(f"{name} {value:.3f}" for name, value in weights.items())


def top_items(item_ids: np.ndarray, labels: pd.DataFrame, fused: np.ndarray, *,
              k: int = 10) -> pd.DataFrame:
    """The first ``k`` items of one request ordered by fused score (highest first).

    Parameters
    ----------
    item_ids : array, shape (n,)
    labels : DataFrame, n rows, one column per objective
    fused : array, shape (n,)
        The fused score of each item. Equal scores keep the log's order (display only:
        the metrics average over ties, see ``fusion.evaluate``).
    """
    order = np.argsort(-np.asarray(fused, dtype=np.float64), kind="stable")[:k]
    table = pd.DataFrame({"rank": np.arange(1, len(order) + 1),
                          "item": np.asarray(item_ids)[order],
                          "fused score": np.asarray(fused)[order]})
    for name in labels.columns:
        table[name] = labels[name].to_numpy()[order]
    return table.set_index("rank")


# --- search results ----------------------------------------------------------------------
def candidate_status(candidates: pd.DataFrame) -> pd.Series:
    """``"front"``, ``"dominated"`` or ``"infeasible"`` per candidate (SearchResult columns)."""
    status = np.where(~candidates["feasible"].to_numpy(dtype=bool), "infeasible",
                      np.where(candidates["pareto_rank"].to_numpy() == 0, "front", "dominated"))
    return pd.Series(status, index=candidates.index, name="status")


def metric_columns(candidates: pd.DataFrame) -> list[str]:
    """The ``<objective>:<metric>`` columns of a SearchResult's candidates, in order."""
    return [c for c in candidates.columns
            if ":" in c and not c.startswith(("w:", "alpha:"))]


def pareto_scatter(candidates: pd.DataFrame, x: str, y: str, *, weight_columns: Sequence[str],
                   metric_columns: Sequence[str], baseline: Mapping[str, float] | None = None,
                   selected_id: int | None = None) -> go.Figure:
    """Candidates on two metrics: the front highlighted, infeasible greyed, baseline marked.

    Each candidate point carries its ``candidate_id`` as ``customdata[0]`` (what a selection
    event returns) and hovers with its weights and every metric in ``metric_columns``.
    """
    hover = pd.Series(_hover_text(candidates, weight_columns, metric_columns),
                      index=candidates.index)
    status = candidate_status(candidates)
    figure = go.Figure()
    for name in STATUSES:
        part = candidates[status == name]
        figure.add_trace(go.Scatter(
            x=part[x], y=part[y], mode="markers", name=name,
            marker={"color": _STATUS_COLORS[name], "size": 9 if name == "front" else 7,
                    "line": {"width": 0.5, "color": "white"}},
            customdata=part[["candidate_id"]].to_numpy(), text=hover[part.index],
            hovertemplate="%{text}<extra></extra>",
        ))
    if baseline is not None and x in baseline and y in baseline:
        figure.add_trace(go.Scatter(
            x=[baseline[x]], y=[baseline[y]], mode="markers", name="baseline",
            marker={"symbol": "star", "size": 16, "color": BASELINE_COLOR},
            hovertemplate=f"baseline<br>{x} %{{x:.4f}}<br>{y} %{{y:.4f}}<extra></extra>",
        ))
    if selected_id is not None:
        chosen = candidates[candidates["candidate_id"] == selected_id]
        figure.add_trace(go.Scatter(
            x=chosen[x], y=chosen[y], mode="markers", name="selected", hoverinfo="skip",
            marker={"symbol": "circle-open", "size": 20, "color": BASELINE_COLOR,
                    "line": {"width": 2}},
        ))
    figure.update_layout(xaxis_title=x, yaxis_title=y, clickmode="event+select",
                         legend={"orientation": "h", "y": -0.2}, margin={"t": 10})
    return figure


def _hover_text(candidates: pd.DataFrame, weight_columns: Sequence[str],
                      metric_columns: Sequence[str]) -> list[str]:
    weights = candidates[list(weight_columns)].to_numpy(dtype=np.float64)
    metrics = candidates[list(metric_columns)].to_numpy(dtype=np.float64)
    names = [c.split(":", 1)[1] for c in weight_columns]
    texts = []
    for candidate_id, w_row, m_row in zip(candidates["candidate_id"], weights, metrics):
        weight_text = ", ".join(f"{n} {v:.3f}" for n, v in zip(names, w_row))
        metric_text = "<br>".join(f"{c} {v:.4f}" for c, v in zip(metric_columns, m_row))
        texts.append(f"candidate {candidate_id}<br>weights: {weight_text}<br>{metric_text}")
    return texts


def scatter_matrix(candidates: pd.DataFrame, metric_columns: Sequence[str]) -> go.Figure:
    """Every pair of searched metrics, coloured by candidate status."""
    status = candidate_status(candidates)
    figure = go.Figure()
    for name in STATUSES:
        part = candidates[status == name]
        figure.add_trace(go.Splom(
            dimensions=[{"label": c, "values": part[c]} for c in metric_columns],
            name=name, customdata=part[["candidate_id"]].to_numpy(),
            marker={"color": _STATUS_COLORS[name], "size": 5},
            diagonal={"visible": False}, showupperhalf=False,
        ))
    figure.update_layout(height=max(400, 180 * len(metric_columns)), margin={"t": 10},
                         legend={"orientation": "h"})
    return figure


def parallel_coordinates(candidates: pd.DataFrame, weight_columns: Sequence[str],
                         metric_columns: Sequence[str]) -> go.Figure:
    """One line per candidate from its weights to its metrics; front lines in the front colour."""
    status = candidate_status(candidates)
    code = status.map({name: i for i, name in enumerate(STATUSES)}).to_numpy()
    figure = go.Figure(go.Parcoords(
        line={"color": code, "cmin": 0, "cmax": len(STATUSES) - 1,
              "colorscale": [[0.0, INFEASIBLE_COLOR], [0.5, FEASIBLE_COLOR], [1.0, FRONT_COLOR]]},
        dimensions=[{"label": c, "values": candidates[c]} for c in [*weight_columns,
                                                                     *metric_columns]],
    ))
    figure.update_layout(margin={"t": 40, "l": 60, "r": 60})
    return figure


def hypervolume_figure(history: pd.DataFrame) -> go.Figure:
    """Hypervolume of the feasible front against evaluations done (``SearchResult.history``)."""
    figure = go.Figure(go.Scatter(
        x=history["evaluations"], y=history["hypervolume"], mode="lines+markers",
        customdata=history[["elapsed_s"]].to_numpy(),
        hovertemplate="%{x} evaluations, %{customdata[0]:.1f} s<br>hypervolume %{y:.5g}"
                      "<extra></extra>",
    ))
    figure.update_layout(xaxis_title="evaluations", yaxis_title="hypervolume", margin={"t": 10})
    return figure


# --- data summary tables -----------------------------------------------------------------
def format_date_range(first, last) -> str:
    """``"2026-03-02 – 2026-03-08"``; ``"–"`` when the logs have no timestamp."""
    if first is None or last is None:
        return "–"
    return f"{first:%Y-%m-%d} – {last:%Y-%m-%d}"


def objective_table(schema, summary: Mapping[str, object],
                    single_score_gauc: Mapping[str, float]) -> pd.DataFrame:
    """One row per objective: its columns, kind, label statistics and single-score GAUC.

    Parameters
    ----------
    schema : fusion.Schema
    summary : mapping
        ``LogSet.summary()`` (``base_rate`` and ``label_mean`` per objective).
    single_score_gauc : mapping of objective -> float
        Each objective's own score ranked against its own label.
    """
    rows = [{
        "objective": o.name,
        "kind": o.kind,
        "score column": o.score_column,
        "label column": o.label_column,
        "positive if label >": o.positive_threshold,
        "base rate": summary["base_rate"][o.name],
        "label mean": summary["label_mean"][o.name],
        "single-score GAUC": single_score_gauc.get(o.name, float("nan")),
    } for o in schema.objectives]
    return pd.DataFrame(rows).set_index("objective")


def slice_table(slices: Mapping[str, pd.Categorical]) -> pd.DataFrame:
    """Each slice column with its number of distinct values and a few of them."""
    rows = [{"slice": name, "values": len(values.categories),
             "examples": ", ".join(map(str, list(values.categories[:5])))
                         + (", …" if len(values.categories) > 5 else "")}
            for name, values in slices.items()]
    return pd.DataFrame(rows, columns=["slice", "values", "examples"]).set_index("slice")
