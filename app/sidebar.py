"""The sidebar on every page: which logs are loaded and the slice filters applied to them."""

from __future__ import annotations

import streamlit as st

import fusion
from app import state


def render() -> None:
    """Show the data source and the filter widgets; apply changed filters if they load."""
    with st.sidebar:
        choice = state.data_choice()
        st.caption(f"Logs: **{choice.label}**")
        try:
            base = state.base_logs()
        except fusion.FusionError:
            st.caption("Not loaded: see the Data page.")
            return
        st.subheader("Filters", help="Apply on every page. An empty choice keeps every value.")
        selected = {
            column: st.multiselect(column, values, key=f"{state.FILTER_PREFIX}{column}",
                                   placeholder="all")
            for column, values in state.filterable_slices(base).items()
        }
        full_range = state.date_range(base)
        dates = None
        if full_range is not None:
            dates = st.date_input("dates", value=full_range, min_value=full_range[0],
                                  max_value=full_range[1], key=f"{state.FILTER_PREFIX}dates")
            if len(dates) != 2:  # the second day is still being picked
                return
        where = state.build_where(selected, base.schema.ts_column, dates, full_range)
        if where != state.applied_where():
            try:
                state.load(choice, where)
            except fusion.FusionError as exc:
                st.error(f"Filters not applied: {exc}")
                return
            st.session_state[state.WHERE] = where
        logs = state.current_logs()
        st.caption(f"{logs.n_rows:,} rows · {logs.n_requests:,} requests"
                   + (" (filtered)" if where else ""))
