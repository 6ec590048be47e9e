"""Overview: what the dataset holds, what is wrong with it, and its annotation statistics (a
composite's per dataset too)."""

import streamlit as st

from sammflow import access, charts, tables, ui

ctx = ui.context()
kind = access.kind_title(ctx.dataset.kind)
st.title("Overview")
st.caption(f"{ctx.ref.label} · kind: **{kind}** · "
           + " · ".join(f"`{part.root}` · annotations `{part.annotations}`" for part in ctx.ref.parts or (ctx.ref,)))

counts = tables.summary(ctx.dataset)
for column, (label, value, help_text) in zip(st.columns(6), [
    ("Subjects", counts["subjects"], "Subjects with at least one valid annotation row."),
    ("Clips", counts["clips"], "Valid annotation rows."),
    ("Ready", counts["ready"], "Clips whose onset and apex frames are on disk."),
    ("Frames found", counts["frames"], f"Frame files in {counts['folders']} clip folders."),
    ("Missing frames", counts["missing_frames"], "Annotated onset / apex / offset frames not on disk."),
    ("Problems", counts["problems"], "Annotation problems and dataset issues, listed below."),
]):
    column.metric(label, f"{value:,}", help=help_text, border=True)

problems = tables.problem_table(ctx.dataset)
if len(problems):
    with st.expander(f":material/warning: {len(problems)} problems in {problems['clip'].nunique()} clips", expanded=counts["rejected"] > 0):
        st.dataframe(problems, hide_index=True, width="stretch")
else:
    st.success("Every annotation row is valid and every annotated frame is on disk.", icon=":material/check_circle:")

st.subheader("Annotations")
table = tables.annotation_table(ctx.dataset)
chosen = {}
for column, (key, label, field) in zip(st.columns(4), [("ov_subject", "Subject", "subject"), ("ov_emotion", "Emotion", "emotion"),
                                                       ("ov_class", "Objective class", "objective class"), ("ov_status", "Status", "status")]):
    options = sorted(table[field].unique())
    ui.link_choice(key, options, f"a {label.lower()} of this dataset's annotations")
    chosen[field] = column.multiselect(label, options, key=key, bind="query-params", placeholder="all")
shown = tables.filter_table(table, chosen)
st.caption(f"{len(shown)} of {len(table)} rows")
st.dataframe(shown, hide_index=True, width="stretch", height=min(420, 38 + 35 * max(len(shown), 1)))

left, right = st.columns(2)
ui.chart(left, charts.count_chart(shown, "emotion", "Estimated emotion"), "emotions")
ui.chart(right, charts.count_chart(shown, "objective class", "Objective class"), "objective_classes")
fps = ctx.fps
ui.chart(left, charts.histogram(shown, "duration", "Clip duration (onset → offset)", label="duration", fps=fps), "durations")
ui.chart(right, charts.histogram(shown, "latency", "Onset → apex latency", label="latency", fps=fps), "latencies")

st.subheader("Labels")
annotations = ctx.params.annotations
resolved = tables.resolution_counts(ctx.dataset)
st.caption(f"Valid annotation rows by MEGC2019 class (the composite benchmark's mapping of each dataset's emotions) and "
           f"what the sidebar's annotation settings did: published fixes {'applied' if annotations.fix else 'off'}, "
           f"apex policy *{annotations.apex}*.")
metrics = [(f"MEGC2019: {name}", count, f"Clips whose estimated emotion is in the class {name}.")
           for name, count in tables.megc_counts(ctx.dataset).items()]
metrics += [("Fixes applied", resolved["fixed"], f"Clips changed by a published annotation fix ({resolved['fixed_apex']} of them their apex)."),
            ("Apex to spot", resolved["to_spot"], "Clips whose apex is spotted (the frame of peak facial motion) before any flow.")]
for column, (label, value, help_text) in zip(st.columns(len(metrics)), metrics):
    column.metric(label, f"{value:,}", help=help_text, border=True)
st.dataframe(tables.label_table(ctx.dataset), hide_index=True, width="stretch")

if ctx.dataset.parts:
    st.subheader("Labels per dataset")
    st.caption("Each dataset of the composite: its valid annotation rows by MEGC2019 class, and by its own estimated emotions "
               "(each dataset names them its own way).")
    st.dataframe(tables.megc_by_dataset(ctx.dataset), hide_index=True, width="stretch")
    st.dataframe(tables.emotions_by_dataset(ctx.dataset), hide_index=True, width="stretch")
