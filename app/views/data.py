"""Data: choose the logs, map their columns if needed, and check what they hold."""

import pandas as pd
import streamlit as st

import fusion
from app import charts, state

SOURCES = ("Bundled sample", "Path or glob", "Upload")
NO_COLUMN = "(none)"
MAPPING_FOR = "mapping_for"  # the DataChoice whose columns need mapping

st.title("Data")

launched = state.launch_choice()  # `-- --logs PATH` on the command line: the first choice
from_path = launched != state.sample_choice()
source_kind = st.radio("Source", SOURCES, index=int(from_path), horizontal=True,
                       key="data:source")
path_text, upload = "", None
if source_kind == "Path or glob":
    path_text = st.text_input("Path or glob (Parquet, CSV or JSON on the server)",
                              launched.source if from_path else "", key="data:path",
                              placeholder="logs/2026-03-*.parquet")
elif source_kind == "Upload":
    upload = st.file_uploader(
        f"Log file (Parquet, CSV or JSON, up to {state.MAX_UPLOAD_MB} MB)",
        type=list(state.UPLOAD_TYPES), key="data:upload", max_upload_size=state.MAX_UPLOAD_MB)
drop_nan = st.checkbox("Drop rows with a missing, NaN or infinite score or label",
                       key="data:drop_nan",
                       help="Otherwise such rows stop the load; dropped rows are counted below.")


def _chosen() -> state.DataChoice:
    nan_policy = "drop" if drop_nan else "raise"
    if source_kind == "Bundled sample":
        return state.DataChoice(str(state.SAMPLE_LOGS), "bundled sample", nan_policy=nan_policy)
    if source_kind == "Path or glob":
        if not path_text.strip():
            raise fusion.SourceError("no path given: type a file path or a glob")
        return state.DataChoice(path_text.strip(), path_text.strip(), nan_policy=nan_policy)
    if upload is None:
        raise fusion.SourceError("no file uploaded yet")
    saved = state.save_upload(upload.name, upload.getvalue())
    return state.DataChoice(str(saved), f"upload {upload.name}", nan_policy=nan_policy)


def _load(choice: state.DataChoice) -> None:
    # The mapping widgets describe one source's columns: start them afresh for the next.
    for key in [k for k in st.session_state if str(k).startswith("map:")]:
        del st.session_state[key]
    try:
        state.choose_data(choice)
    except fusion.SchemaError as exc:
        st.session_state[MAPPING_FOR] = choice
        st.error(f"{exc}")
        return
    except fusion.FusionError as exc:
        st.error(f"{exc}")
        return
    st.session_state.pop(MAPPING_FOR, None)
    st.rerun()  # the sidebar's filters belong to the new logs


if st.button("Load", key="data:load", type="primary"):
    try:
        _load(_chosen())
    except fusion.FusionError as exc:
        st.error(f"{exc}")


def _mapping_form(choice: state.DataChoice) -> None:
    """Map the source's columns to ids and objectives by hand; load with that schema."""
    try:
        columns = state.source_columns(choice.source)
    except fusion.FusionError as exc:
        st.error(f"{exc}")
        return
    st.subheader("Map columns", help="Auto-detection looks for pred_<name> / label_<name> pairs.")
    detected = fusion.schema.detect_objective_names(columns)

    def pick(label: str, key: str, wanted: str, optional: bool = False) -> str:
        options = ([NO_COLUMN] if optional else []) + columns
        index = options.index(wanted) if wanted in options else 0
        return st.selectbox(label, options, index=index, key=key)

    count = st.number_input("objectives", 1, 20, max(1, len(detected)), key="map:count")
    with st.form("mapping"):
        left, middle, right, last = st.columns(4)
        with left:
            request = pick("request id", "map:request", "request_id")
        with middle:
            user = pick("user id", "map:user", "user_id")
        with right:
            item = pick("item id", "map:item", "item_id")
        with last:
            ts = pick("timestamp", "map:ts", "ts", optional=True)
        objectives = []
        for i in range(int(count)):
            name = detected[i] if i < len(detected) else ""
            cells = st.columns(5)
            objectives.append(dict(
                name=cells[0].text_input("name", name, key=f"map:name:{i}"),
                score=cells[1].selectbox("score column", columns, key=f"map:score:{i}",
                                         index=columns.index(f"pred_{name}")
                                         if f"pred_{name}" in columns else 0),
                label=cells[2].selectbox("label column", columns, key=f"map:label:{i}",
                                         index=columns.index(f"label_{name}")
                                         if f"label_{name}" in columns else 0),
                kind=cells[3].selectbox("kind", fusion.schema.OBJECTIVE_KINDS, key=f"map:kind:{i}"),
                threshold=cells[4].number_input("positive if label >", value=0.0,
                                                key=f"map:threshold:{i}"),
            ))
        if not st.form_submit_button("Load with this mapping"):
            return
    try:
        schema = fusion.Schema(
            objectives=tuple(fusion.Objective(o["name"].strip(), o["score"], o["label"], o["kind"],
                                              o["threshold"]) for o in objectives),
            request_column=request, user_column=user, item_column=item,
            ts_column=None if ts == NO_COLUMN else ts,
        )
    except fusion.FusionError as exc:
        st.error(f"{exc}")
        return
    _load(state.DataChoice(choice.source, choice.label, schema, choice.nan_policy))


pending = st.session_state.get(MAPPING_FOR)
if pending is not None:
    _mapping_form(pending)
elif st.toggle("Map the current source's columns by hand", key="data:map_by_hand"):
    _mapping_form(state.data_choice())

logs = state.require_logs()
summary = logs.summary()
st.divider()
st.subheader(f"{state.data_choice().label}" + (" (filtered)" if state.applied_where() else ""))
figures = st.columns([1, 1, 1, 1, 2.2])
figures[0].metric("rows", f"{summary['rows']:,}")
figures[1].metric("requests", f"{summary['requests']:,}")
figures[2].metric("users", f"{summary['users']:,}")
figures[3].metric("objectives", len(summary["objectives"]))
figures[4].metric("date range", charts.format_date_range(summary["first_ts"], summary["last_ts"]))

st.markdown("**Objectives**: base rate of each label and each score's GAUC on its own label")
st.table(charts.objective_table(logs.schema, summary, state.statistic(logs, "single_score_gauc")))

st.markdown("**Validation**")
if summary["excluded"]:
    st.warning(f"{sum(summary['excluded'].values()):,} row(s) were dropped on load.")
    st.table(pd.DataFrame({"reason": list(summary["excluded"]),
                           "rows": list(summary["excluded"].values())}).set_index("reason"))
else:
    st.success("Every row passed validation: no row was dropped.")
st.table(charts.slice_table(logs.slices))
with st.expander("Schema and fingerprint"):
    st.json({"schema": logs.schema.to_dict(), "fingerprint": logs.fingerprint,
             "filters": state.applied_where()}, expanded=False)
