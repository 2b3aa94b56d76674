"""Tune: move the weights and see every objective's metrics against the baseline."""

import numpy as np
import pandas as pd
import streamlit as st

import fusion
from app import charts, state
from fusion.formulas import DEFAULT_K, KINDS, TRANSFORMS, default_alphas

ALPHA_STEPS = (0.0, 1e-6, 1e-5, 1e-4, 1e-3, 0.01, 0.1, 1.0, 10.0)
CONFIG_TYPES = ("json", "yaml", "yml")
URL_READ = "_tune_url_read"
KEY = state.TUNE_PREFIX  # every widget of the tuner: reset together when a formula is loaded


def apply_shared_link(logs: fusion.LogSet) -> None:
    """A shared link carries the formula in its query parameters: apply it once per session."""
    if st.session_state.get(URL_READ):
        return
    st.session_state[URL_READ] = True
    try:
        linked = state.formula_from_query(st.query_params.to_dict())
        if linked is not None:
            linked.validate_for(logs)
            state.set_formula(linked)
    except fusion.FusionError as exc:
        st.error(f"The link's formula is not used: {exc}")


def seed_widgets(logs: fusion.LogSet, formula: fusion.Formula) -> None:
    """Widgets start from the formula being tuned; afterwards they keep their own state."""
    defaults = {"kind": formula.kind, "k": formula.k or DEFAULT_K}
    alphas = default_alphas(logs)  # each objective's log(score + alpha) defined, as for product
    for o in logs.objectives:
        defaults[f"w:{o}"] = float(formula.weights.get(o, 0.0))
        defaults[f"a:{o}"] = float(formula.alphas.get(o, alphas[o]))
        defaults[f"t:{o}"] = formula.transforms.get(o, "identity")
    for key, value in defaults.items():
        st.session_state.setdefault(KEY + key, value)


def alpha_slider(o: str) -> float:
    options = sorted(set(ALPHA_STEPS) | {st.session_state[f"{KEY}a:{o}"]})
    return st.select_slider(f"alpha {o}", options, key=f"{KEY}a:{o}",
                            format_func=lambda v: f"{v:g}")


def formula_controls(logs: fusion.LogSet) -> fusion.Formula:
    """The formula widgets; returns the formula they describe (FormulaError if invalid)."""
    kind = st.segmented_control("formula", KINDS, key=f"{KEY}kind", required=True)
    weights = {}
    for o in logs.objectives:
        top = max(1.0, st.session_state[f"{KEY}w:{o}"])
        weights[o] = st.slider(f"weight {o}", 0.0, top, step=0.01, key=f"{KEY}w:{o}")
    alphas, transforms, k = None, None, None
    if kind == "product":
        with st.expander("alphas: log(score + alpha)"):
            alphas = {o: alpha_slider(o) for o in logs.objectives}
    elif kind == "sum":
        with st.expander("transforms"):
            transforms = {o: st.selectbox(f"transform {o}", TRANSFORMS, key=f"{KEY}t:{o}")
                          for o in logs.objectives}
            alphas = {o: alpha_slider(o) for o in logs.objectives if transforms[o] == "log"}
    else:
        k = st.number_input("k in 1 / (rank + k)", min_value=0.001, key=f"{KEY}k")
    return fusion.Formula.of(kind, weights, alphas=alphas, transforms=transforms, k=k)


def baseline_controls(logs: fusion.LogSet, baseline_label: str) -> None:
    st.caption(f"Baseline: {baseline_label}")
    with st.expander("baseline from a config"):
        upload = st.file_uploader("config (.json / .yaml)", type=list(CONFIG_TYPES),
                                  key="baseline:upload")
        if upload is not None and st.button("Use as baseline", key="baseline:use"):
            try:
                path = state.save_upload(upload.name, upload.getvalue(), kind="baseline",
                                         allowed=CONFIG_TYPES)
                config = fusion.load_config(path, logs)
            except fusion.FusionError as exc:
                st.error(f"{exc}")
            else:
                st.session_state[state.BASELINE] = (config.formula, f"config {config.name!r}")
                st.rerun()
        if st.session_state.get(state.BASELINE) is not None and st.button(
                "Back to equal weights", key="baseline:clear"):
            del st.session_state[state.BASELINE]
            st.rerun()


def metrics_view(result) -> None:
    frame = result.to_frame()
    st.table(charts.format_metric_table(charts.metric_table(frame)))
    st.caption("Δ: relative change against the baseline. "
               + charts.describe_changes(frame, metrics=["gauc"]))


def ranking_view(logs: fusion.LogSet, formula: fusion.Formula, baseline: fusion.Formula) -> None:
    sample = state.request_sample(logs)
    st.plotly_chart(charts.histogram_figure(
        charts.histogram_data({"fused score": formula.fuse(sample)}), x_title="fused score",
        title=f"fused score of {sample.n_requests:,} sampled requests"))

    st.markdown("**One request, re-ranked** (top 10 with labels)")
    request = st.number_input("request #", 0, logs.n_requests - 1, key="sample:request")
    one = logs.take_requests(np.array([request]))
    labels = pd.DataFrame(one.labels, columns=list(logs.objectives))
    before, after = st.columns(2)
    before.caption(f"baseline · request {one.request_ids[0]}")
    before.table(charts.top_items(np.asarray(one.items), labels, baseline.fuse(one)))
    after.caption("tuned")
    after.table(charts.top_items(np.asarray(one.items), labels, formula.fuse(one)))


@st.fragment
def tuner(logs: fusion.LogSet) -> None:
    # A fragment: moving a weight reruns only the tuner, not the page and its sidebar.
    controls, results = st.columns([1, 2], gap="large")
    with controls:
        try:
            formula = formula_controls(logs)
            baseline, baseline_label = state.baseline(logs, formula.kind)
            result = state.evaluate(logs, formula, baseline)  # validates both formulas first
        except fusion.FusionError as exc:
            st.error(f"{exc}")  # keep showing the last formula that worked
            formula = state.current_formula(logs)
            baseline, baseline_label = state.baseline(logs, formula.kind)
            result = state.evaluate(logs, formula, baseline)
        else:
            st.session_state[state.FORMULA] = formula
    with results:  # sent first: the numbers are what a weight move is watched for
        metrics_view(result)
    with controls:
        query = state.formula_to_query(formula)
        if st.query_params.to_dict() != query:
            st.query_params.from_dict(query)
        baseline_controls(logs, baseline_label)
        if st.button("Reset weights to the baseline", key="baseline:reset"):
            state.set_formula(baseline)
            st.rerun()
    with results:
        ranking_view(logs, formula, baseline)


st.title("Tune")
logs = state.require_interactive_logs()
apply_shared_link(logs)
seed_widgets(logs, state.current_formula(logs))
tuner(logs)
