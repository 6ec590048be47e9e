"""Batch export: every clip's flow map, manifest.csv and params.json (and features.npz), with live status; the
outputs as a zip and the folder's HTML report."""

import json

import streamlit as st

from sammflow import access, export, export_choices, tables, ui
from sammflow.features import FEATURES_FILE

ctx = ui.context()
st.title("Batch export")
st.caption("Writes a flow map per clip in `flows/` (`sub{S}_{C}.png` for SAMM, the clip id for the other kinds), `manifest.csv` "
           "and `params.json`, the same files as `sammflow export`, using the parameters in the sidebar. A clip that fails is "
           "listed with its cause; the others go on.")

# one default folder per dataset and parameter set; it follows the sidebar until the user types another
default = str(access.default_out_dir(ctx.ref, ctx.params.hash))
chosen = st.session_state.pop("_out_chosen", None)  # the new folder an export just went to
if chosen is not None:
    st.session_state["out_dir"] = chosen
elif st.session_state.get("out_dir") in (None, st.session_state.get("_out_default")):
    st.session_state["out_dir"] = default
st.session_state["_out_default"] = default
out_dir = st.text_input("Output folder", key="out_dir",
                        help=f"Default: one folder per dataset and parameter hash under {access.out_base()}. Inside the folders "
                             "this dashboard may open, outside the dataset; new, empty, or an earlier export.")
arrays = st.checkbox("Also write features.npz (u, v, strain arrays with labels and folds)", key="export_arrays", bind="query-params",
                     help=f"`{FEATURES_FILE}`: per clip u, v and optical strain at the map size, the normalised model input X, the "
                          "MEGC2019 label, the action units and the leave-one-subject-out fold (numpy, no pickles); in the zip too.")
scheduler_text = st.text_input(f"{export_choices.SCHEDULER_LABEL} (optional)", key="export_scheduler",
                               placeholder="tcp://host:8786 or local:2",
                               help="Empty: this machine's processes. A Dask scheduler's address runs the clips on its cluster, whose "
                                    "workers must see the dataset and the output folder at the same paths; local:N starts N worker "
                                    "processes here (one per core at most). The same files either way.")
with st.expander(f"Parameters (hash `{ctx.params.hash}`, preset {ctx.params.preset or 'none'})"):
    st.code(json.dumps(ctx.params.to_dict(), indent=2), language="json")

try:
    scheduler = export_choices.scheduler_choice(scheduler_text)
    plan = export_choices.export_plan(ctx.dataset, out_dir, ctx.params, arrays=arrays)
except ValueError as exc:  # the folder or the scheduler breaks a rule: the message names it and the rule
    st.error(export_choices.page_message(str(exc)), icon=":material/error:")
    st.stop()

run, force, target = None, False, plan.out
result = st.session_state.get("export_result")
if plan.state == "new":
    (st.warning if plan.delete else st.caption)(plan.message())
    run = st.button(f"Export {plan.clips} clips", key="run_export", type="primary", icon=":material/play_arrow:")
elif plan.state == "resume":
    st.info(plan.message(), icon=":material/history:")
    b1, b2, b3, _ = st.columns([1, 1, 1, 1])
    resume = b1.button(f"Resume: compute {plan.todo}, keep {plan.kept}", key="run_export", type="primary", icon=":material/play_arrow:")
    restart = b2.button(f"Start over: recompute all {plan.clips}", key="export_restart", icon=":material/restart_alt:")
    run, force = resume or restart, restart
    if plan.kept and (result is None or result.out_dir != plan.out):  # an export's own result has the button below
        ui.report_button(b3, plan.out, key="report_folder")
else:
    st.warning(plan.message(), icon=":material/warning:")
    fresh = export_choices.new_folder(plan.out)
    b1, b2, _ = st.columns([1, 1, 2])
    if fresh is not None and b1.button(f"Export to a new folder: {fresh.name}", key="export_new_folder", type="primary",
                                       icon=":material/create_new_folder:"):
        run, target = True, fresh
    maps = sum(name.endswith(".png") for name in plan.delete)
    if b2.button(f"Replace: delete {maps} maps, export", key="export_replace", icon=":material/delete_sweep:"):
        run = force = True

if run:
    bar = st.progress(0.0, text="Starting…")
    table = st.empty()
    rows = []

    def on_row(done, total, row):
        rows.append({"clip": row["clip"], "status": row["status"], "cause": row.get("error", ""), "output": row.get("output", "")})
        bar.progress(done / total, text=f"{row['clip']} ({done} of {total})")
        table.dataframe(rows, hide_index=True, width="stretch")

    try:
        st.session_state["export_result"] = ui.export_flows(ctx, target, on_row=on_row, force=force, arrays=arrays, scheduler=scheduler)
    except ValueError as exc:  # the folder changed meanwhile (another export), another run holds it, the scheduler is unreachable
        bar.empty()
        st.error(export_choices.page_message(str(exc)), icon=":material/error:")
        st.stop()
    except OSError as exc:
        bar.empty()
        st.error(f"Cannot export to {target}: {exc.strerror or exc}", icon=":material/error:")
        st.stop()
    if target != plan.out:
        st.session_state["_out_chosen"] = str(target)
    st.rerun()  # the folder's new state above, the result below

if result is not None:
    done = f" ({result.resumed} kept from the earlier export)" if result.resumed else ""
    replaced = f"; {result.replaced} maps of other parameters deleted first" if result.replaced else ""
    (st.warning if result.failed else st.success)(f"{result.ok} of {len(result.rows)} clips ok{done}, {len(result.failed)} failed "
                                                  f"→ `{result.out_dir}`{replaced}")
    st.dataframe([{"clip": r["clip"], "status": r["status"], "cause": r.get("error", ""), "output": r.get("output", "")} for r in result.rows],
                 hide_index=True, width="stretch")
    features = result.out_dir / FEATURES_FILE
    if features.is_file():
        try:
            st.info(tables.features_summary(features), icon=":material/dataset:")
        except (OSError, ValueError) as exc:  # removed or replaced by hand since
            st.warning(f"Cannot read `{features}`: {exc}")
    z1, z2, _ = st.columns([2, 1, 1])
    z1.download_button(f"Download maps + manifest + params{' + features.npz' if features.is_file() else ''} (zip)",
                       export.zip_outputs(result), file_name="sammflow_flows.zip", mime="application/zip",
                       icon=":material/folder_zip:", on_click="ignore")
    ui.report_button(z2, result.out_dir, key="report_result")
