"""Overview: what the dataset holds, what is wrong with it, and its annotation statistics."""

import streamlit as st

from sammflow import figures, tables, ui

ctx = ui.context()
st.title("Overview")
st.caption(f"{ctx.ref.label} · `{ctx.ref.root}` · annotations `{ctx.ref.annotations}`")

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
f1, f2, f3, f4 = st.columns(4)
subjects = f1.multiselect("Subject", sorted(table["subject"].unique()), key="ov_subject", placeholder="all")
emotions = f2.multiselect("Emotion", sorted(table["emotion"].unique()), key="ov_emotion", placeholder="all")
classes = f3.multiselect("Objective class", sorted(table["objective class"].unique()), key="ov_class", placeholder="all")
statuses = f4.multiselect("Status", sorted(table["status"].unique()), key="ov_status", placeholder="all")
shown = tables.filter_table(table, {"subject": subjects, "emotion": emotions, "objective class": classes, "status": statuses})
st.caption(f"{len(shown)} of {len(table)} rows")
st.dataframe(shown, hide_index=True, width="stretch", height=min(420, 38 + 35 * max(len(shown), 1)))

left, right = st.columns(2)
left.plotly_chart(figures.count_chart(shown, "emotion", "Estimated emotion"), config=figures.plotly_config("emotions"))
right.plotly_chart(figures.count_chart(shown, "objective class", "Objective class"), config=figures.plotly_config("objective_classes"))
left.plotly_chart(figures.histogram(shown, "duration", "Clip duration (onset → offset)", label="duration"), config=figures.plotly_config("durations"))
right.plotly_chart(figures.histogram(shown, "latency", "Onset → apex latency", label="latency"), config=figures.plotly_config("latencies"))
