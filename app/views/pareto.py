"""Pareto: search the weights for the best trade-offs and pick one."""

import time

import streamlit as st

import fusion
from app import charts, state
from fusion.formulas import KINDS

SCATTER = "pareto:scatter"
LOADED = "_pareto_loaded_candidate"
BASELINE_LABEL = "_pareto_baseline_label"
METHODS = ("auto", "sobol", "random")

st.title("Pareto")
logs = state.require_interactive_logs()
formula = state.current_formula(logs)
pairs = [f"{o}:{m}" for o in logs.objectives for m in state.METRICS]

with st.form("pareto:settings"):
    left, right = st.columns(2)
    kind = left.selectbox("formula", KINDS, index=KINDS.index(formula.kind), key="pareto:kind")
    # Graded objectives (dwell) are judged by how much of them reaches the top, not by AUC.
    defaults = [f"{o.name}:{'gauc' if o.kind == 'binary' else 'ndcg@10'}"
                for o in logs.schema.objectives]
    maximise = left.multiselect("maximise", pairs, default=defaults, key="pareto:objectives")
    constraints = left.text_area(
        "guardrails, one per line", key="pareto:constraints",
        placeholder="conversion:gauc>=0.995*baseline",
        help="<objective>:<metric> >= or <= a number, or a factor times the baseline's value.")
    budget = right.number_input("candidates to evaluate", 2, 20_000, 200, step=50,
                                key="pareto:budget")
    seed = right.number_input("seed", 0, 2**31 - 1, 0, key="pareto:seed")
    method = right.selectbox("sampling", METHODS, key="pareto:method")
    search_alphas = right.checkbox("search alphas too (product)", key="pareto:alphas")
    study_name = right.text_input(
        "save the study as (optional name)", key="pareto:study",
        help=f"Saved batch by batch under {state.STUDY_DIR}; the same name and settings resume.")
    run = st.form_submit_button("Run search", type="primary")

if run:
    baseline, baseline_label = state.baseline(logs, kind)
    # Alphas, transforms and k stay fixed: those of the formula being tuned, or the defaults.
    fixed = formula if formula.kind == kind else state.default_formula(logs, kind)
    with st.status(f"Searching {int(budget)} candidates…", expanded=True) as status:
        bar = st.progress(0.0, text="starting")

        def progress(done: int, total: int, hypervolume: float) -> None:
            bar.progress(min(done / total, 1.0),
                         text=f"{done}/{total} evaluated · hypervolume {hypervolume:.4g}")

        started = time.perf_counter()
        try:
            study = state.study_path(study_name) if study_name.strip() else None
            result = fusion.search(
                logs, kind, objectives=[tuple(p.split(":", 1)) for p in maximise],
                constraints=[c.strip() for c in constraints.splitlines() if c.strip()],
                budget=int(budget), seed=int(seed), method=method, progress=progress,
                study=study, baseline=baseline,
                search_alphas=search_alphas, alphas=fixed.alphas or None,
                transforms=fixed.transforms or None, k=fixed.k)
        except fusion.FusionError as exc:
            status.update(label="Search failed", state="error")
            st.error(f"{exc}")
        else:
            seconds = time.perf_counter() - started
            st.session_state[state.SEARCH] = result
            st.session_state[BASELINE_LABEL] = baseline_label
            st.session_state.pop(state.SELECTED, None)
            status.update(label=f"Evaluated {len(result.candidates)} candidates in {seconds:.1f} s",
                          state="complete", expanded=False)

with st.expander("Open a saved study"):
    saved = st.selectbox("saved studies", state.saved_studies(), key="pareto:saved",
                         format_func=lambda path: path.stem, index=None,
                         placeholder="choose a saved study")
    other = st.text_input("or a study file (.duckdb) on the server", key="pareto:open_path")
    opened = other.strip() or saved
    if st.button("Open", key="pareto:open") and opened:
        try:
            st.session_state[state.SEARCH] = fusion.open_study(opened)
            st.session_state.pop(BASELINE_LABEL, None)
            st.session_state.pop(state.SELECTED, None)
        except fusion.FusionError as exc:
            st.error(f"{exc}")

result = st.session_state.get(state.SEARCH)
if result is None:
    st.info("Run a search, or open a saved study, to see the trade-offs.")
    st.stop()

if result.logs_fingerprint.get("content_hash") != logs.fingerprint.get("content_hash"):
    st.info(f"This search ran on other logs or filters ({result.logs_fingerprint.get('rows'):,} "
            "rows): its metrics describe those. Tune and Export evaluate a picked candidate on "
            "the current logs.")
candidates = result.candidates
weight_columns = [c for c in candidates.columns if c.startswith("w:")]
metric_columns = charts.metric_columns(candidates)


def _on_select() -> None:
    points = st.session_state[SCATTER].selection.points
    chosen = [p["customdata"][0] for p in points if p.get("customdata")]
    if chosen:
        st.session_state[state.SELECTED] = int(chosen[0])


# A selection (from the chart, the picker below or a test) loads the candidate into Tune.
selected = st.session_state.get(state.SELECTED)
if selected is not None and selected != st.session_state.get(LOADED):
    try:
        state.set_formula(result.formula(selected))
    except fusion.FusionError as exc:
        st.error(f"{exc}")
    st.session_state[LOADED] = selected

figures = st.columns(4)
figures[0].metric("hypervolume", f"{result.hypervolume:.5g}")
figures[1].metric("on the front", len(result.front))
figures[2].metric("feasible", int(candidates["feasible"].sum()))
figures[3].metric("candidates", len(candidates))
st.caption(f"Baseline: {st.session_state.get(BASELINE_LABEL, result.baseline_source)} · "
           f"hypervolume reference ({result.reference_source}): "
           + ", ".join(f"{k} {v:.4f}" for k, v in result.reference_point.items()))

axes = st.columns(2)
x = axes[0].selectbox("x", metric_columns, index=0, key="pareto:x")
y = axes[1].selectbox("y", metric_columns, index=min(1, len(metric_columns) - 1), key="pareto:y")
st.plotly_chart(
    charts.pareto_scatter(candidates, x, y, weight_columns=weight_columns,
                          metric_columns=metric_columns, baseline=result.baseline_metrics,
                          selected_id=selected),
    key=SCATTER, on_select=_on_select, selection_mode="points")

picks = {"knee": result.knee_id, "preferred": result.preferred_id}
front_ids = [int(i) for i in result.front["candidate_id"]]


def _on_pick() -> None:
    if st.session_state["pareto:pick"] is not None:
        st.session_state[state.SELECTED] = st.session_state["pareto:pick"]


st.selectbox("or pick a front candidate", [None, *front_ids], key="pareto:pick",
             on_change=_on_pick,
             format_func=lambda i: "–" if i is None else
             f"{i}" + "".join(f" ({name})" for name, v in picks.items() if v == i))

if selected is not None:
    row = candidates[candidates["candidate_id"] == selected].iloc[0]
    st.success(f"Candidate {selected} is loaded into Tune and Export: "
               + charts.format_weights({c[2:]: row[c] for c in weight_columns}))
    st.page_link("views/tune.py", label="Open in Tune", icon=":material/tune:")

tabs = st.tabs(["scatter matrix", "parallel coordinates", "hypervolume growth", "candidates"])
with tabs[0]:
    st.plotly_chart(charts.scatter_matrix(candidates, result.objective_columns))
with tabs[1]:
    st.plotly_chart(charts.parallel_coordinates(candidates, weight_columns, metric_columns))
with tabs[2]:
    st.plotly_chart(charts.hypervolume_figure(result.history))
with tabs[3]:
    st.dataframe(candidates, hide_index=True)
st.download_button("candidates as CSV", candidates.to_csv(index=False), "candidates.csv",
                   "text/csv", key="pareto:csv")
