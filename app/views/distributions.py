"""Distributions: each objective's scores, calibration and correlations, per slice."""

import streamlit as st

from app import charts, state

NO_SPLIT = "(no split)"
MAX_SPLIT_VALUES = 12  # more series than this are unreadable as overlaid curves

st.title("Distributions")
logs = state.require_interactive_logs()

controls = st.columns(4)
objective = controls[0].selectbox("objective", logs.objectives, key="dist:objective")
view = controls[1].radio("view", ["histogram", "ECDF"], horizontal=True, key="dist:view")
log_x = controls[2].checkbox("log scale", key="dist:log")
splittable = [name for name, values in logs.slices.items()
              if len(values.categories) <= MAX_SPLIT_VALUES]
split = controls[3].selectbox("split by", [NO_SPLIT, *splittable], key="dist:split")

scores = logs.scores[:, logs.objective_index(objective)]
if split == NO_SPLIT:
    series = {objective: scores}
else:
    codes = logs.slices[split].codes
    series = {str(value): scores[codes == code]
              for code, value in enumerate(logs.slices[split].categories)}

if view == "histogram":
    data = charts.histogram_data(series, log_x=log_x)
    figure = charts.histogram_figure(data, x_title=f"{objective} score", log_x=log_x)
else:
    data = charts.ecdf_data(series)
    figure = charts.ecdf_figure(data, x_title=f"{objective} score", log_x=log_x)
st.plotly_chart(figure)
if log_x:
    st.caption("Scores <= 0 cannot be drawn on a log scale and are left out.")
st.download_button(f"{view} data as CSV", data.to_csv(index=False),
                   f"{objective}-{view.lower()}.csv", "text/csv", key="dist:csv")

gauc = state.statistic(logs, "single_score_gauc")[objective]
st.metric(f"{objective} score's GAUC on its own label", f"{gauc:.4f}")

st.subheader("Calibration")
curve = state.statistic(logs, "reliability_curve", objective)
ece = state.statistic(logs, "expected_calibration_error", objective)
graded = logs.schema.objective(objective).kind == "graded"
st.plotly_chart(charts.reliability_figure(curve, ece=ece, objective=objective, graded=graded))
if graded:
    st.caption("A graded score is compared with the mean label, in label units (ECE too).")
st.download_button("reliability data as CSV", curve.to_csv(index=False),
                   f"{objective}-reliability.csv", "text/csv", key="dist:reliability_csv")

st.subheader("Correlations within requests")
st.caption("Spearman correlation of scores and labels, within each request, averaged.")
matrix = state.statistic(logs, "within_request_spearman")
st.plotly_chart(charts.correlation_figure(matrix))
st.download_button("correlation matrix as CSV", matrix.to_csv(), "correlations.csv", "text/csv",
                   key="dist:correlation_csv")
