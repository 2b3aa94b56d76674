"""Export: download the chosen formula as a config, or check a config on the current logs."""

import re

import streamlit as st

import fusion
from app import charts, state

FORMATS = {"JSON": ("json", "application/json"), "YAML": ("yaml", "application/x-yaml"),
           "SQL": ("sql", "application/sql")}
CONFIG_TYPES = ("json", "yaml", "yml")

st.title("Export")
logs = state.require_logs()
if state.interactive_logs(logs) is not logs:
    st.caption(f"Evaluated on every row: {logs.n_rows:,} rows, {logs.n_requests:,} requests "
               "(the Tune and Pareto pages use a sample).")
# Configs store weights summing to 1; the metrics shown are those of exactly that formula.
formula = fusion.stored_formula(state.current_formula(logs))
baseline, baseline_label = state.baseline(logs, formula.kind)
result = state.evaluate(logs, formula, baseline)
frame = result.to_frame()

st.markdown(f"**{formula.kind}** · " + charts.format_weights(formula.weights))
changes = charts.describe_changes(frame)
st.markdown(f"Against the baseline ({baseline_label}): {changes or 'no change'}.")
st.table(charts.format_metric_table(charts.metric_table(frame)))

name = st.text_input("config name", "fusion", key="export:name")
format_name = st.radio("format", list(FORMATS), horizontal=True, key="export:format")
try:
    config = fusion.export_config(formula, logs, name=name, metrics=result, baseline=baseline)
except fusion.FusionError as exc:
    st.error(f"{exc}")
    st.stop()
text = {"JSON": config.to_json, "YAML": config.to_yaml, "SQL": config.to_sql_script}[format_name]()
suffix, mime = FORMATS[format_name]
file_stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip(".-") or "fusion"
st.download_button(f"Download {format_name}", text, f"{file_stem}.{suffix}", mime,
                   key="export:download", type="primary")
st.code(text, language={"JSON": "json", "YAML": "yaml", "SQL": "sql"}[format_name])

st.divider()
st.subheader("Check a config on the current logs")
upload = st.file_uploader("config (.json / .yaml)", type=list(CONFIG_TYPES), key="export:import")
if upload is not None:
    try:
        path = state.save_upload(upload.name, upload.getvalue(), kind="config",
                                 allowed=CONFIG_TYPES)
        imported = fusion.load_config(path, logs)
        checked = state.evaluate(logs, imported.formula, imported.baseline,
                                 imported.metric_names() or state.METRICS)
    except fusion.FusionError as exc:
        st.error(f"{exc}")
    else:
        st.markdown(f"**{imported.name}** · {imported.formula.kind} · "
                    + charts.format_weights(imported.formula.weights))
        if not imported.matches(logs):
            st.info("These are not the logs the config was exported from: its stored metrics "
                    "are shown next to the re-evaluated ones for comparison.")
        st.table(charts.reevaluation_table(imported.metrics_frame(), checked.to_frame()))
        use, as_baseline = st.columns(2)
        if use.button("Load into Tune", key="export:use"):
            state.set_formula(imported.formula)
            st.rerun()
        if as_baseline.button("Use as baseline", key="export:as_baseline"):
            st.session_state[state.BASELINE] = (imported.formula, f"config {imported.name!r}")
            st.rerun()
