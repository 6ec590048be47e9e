"""Batch export: every clip's flow map, manifest.csv and params.json, with live status."""

import json

import streamlit as st

from sammflow import access, export, ui

ctx = ui.context()
st.title("Batch export")
st.caption("Writes `flows/sub{S}_{C}.png`, `manifest.csv` and `params.json`, the same files as `python -m sammflow export`, "
           "using the parameters in the sidebar. A clip that fails is listed with its cause; the others go on.")

out_dir = st.text_input("Output folder", value=access.default_out_dir(), key="out_dir",
                        help="Inside the folders this dashboard may open, outside the dataset; new, empty, or an earlier export.")
with st.expander(f"Parameters (hash `{ctx.params.hash}`)"):
    st.code(json.dumps(ctx.params.to_dict(), indent=2), language="json")
run = st.button(f"Export {len(ctx.dataset.annotations.clips) + len(ctx.dataset.annotations.rejected)} clips",
                key="run_export", type="primary", icon=":material/play_arrow:")

if run:
    bar = st.progress(0.0, text="Starting…")
    table = st.empty()
    rows = []

    def on_row(done, total, row):
        rows.append({"clip": row["clip"], "status": row["status"], "cause": row.get("error", ""), "output": row.get("output", "")})
        bar.progress(done / total, text=f"{row['clip']} ({done} of {total})")
        table.dataframe(rows, hide_index=True, width="stretch")

    try:
        st.session_state["export_result"] = ui.export_flows(ctx, out_dir, on_row=on_row)
    except ValueError as exc:  # the folder breaks a rule: the message names it and the rule
        bar.empty()
        st.error(str(exc), icon=":material/error:")
        st.stop()
    except OSError as exc:
        bar.empty()
        st.error(f"Cannot export to {out_dir}: {exc.strerror or exc}", icon=":material/error:")
        st.stop()
    bar.empty()
    table.empty()

result = st.session_state.get("export_result")
if result is not None:
    (st.warning if result.failed else st.success)(f"{result.ok} of {len(result.rows)} clips ok, {len(result.failed)} failed → `{result.out_dir}`")
    st.dataframe([{"clip": r["clip"], "status": r["status"], "cause": r.get("error", ""), "output": r.get("output", "")} for r in result.rows],
                 hide_index=True, width="stretch")
    st.download_button("Download maps + manifest + params (zip)", export.zip_outputs(result), file_name="sammflow_flows.zip",
                       mime="application/zip", icon=":material/folder_zip:", on_click="ignore")
