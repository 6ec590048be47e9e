"""Alignment diagnostics: per-frame MTCNN crops versus template-aligned crops of one clip, and
its facial motion from onset to offset with the annotated and spotted apex."""

import streamlit as st

from sammflow import charts, figures, tables, ui
from sammflow.pipeline import ClipError

ctx = ui.context()
st.title("Alignment diagnostics")
st.caption("Each frame cropped by its own MTCNN box (before) versus matched to the apex face crop (after). "
           "Differences between two frames that are not facial motion are alignment error.")
clips = tables.ready_ids(ctx.dataset)
if not clips:
    st.warning("No clip has its onset and apex frames on disk.")
    st.stop()

ui.link_choice("clip", clips, "a clip of this dataset with its onset and apex frames on disk")
c1, c2, c3, c4 = st.columns([2, 1, 1, 1.4])
# bound widgets keep plain values (no format_func): the URL holds what format_func returns
clip = c1.selectbox("Clip", clips, key="clip", bind="query-params", on_change=ui.forget("a", "b"))
annotated, frames = ctx.dataset.clip(clip)
try:
    with st.spinner("Spotting the apex…" if annotated.spot else "Reading the clip…"):
        ann = ui.annotation(ctx, clip)  # its apex spotted where the sidebar's apex policy says so
except ClipError as exc:
    st.error(str(exc))
    st.stop()
marks = {ann.onset: "onset", ann.apex: "apex", ann.offset: "offset"}
label = lambda n: f"{n} ({marks[n]})" if n in marks else str(n)
for key in ("a", "b"):
    ui.link_choice(key, frames.numbers, f"a frame of {clip} on disk ({frames.numbers[0]}–{frames.numbers[-1]})")
ui.preset("a", frames.numbers, ann.onset)
ui.preset("b", frames.numbers, ann.apex)
a = c2.selectbox("Frame A", frames.numbers, key="a", bind="query-params", help=f"onset {ann.onset}, apex {ann.apex}, offset {ann.offset}")
b = c3.selectbox("Frame B", frames.numbers, key="b", bind="query-params", help=f"onset {ann.onset}, apex {ann.apex}, offset {ann.offset}")
threshold = c4.slider("Difference threshold (grey levels)", 1, 64, 12, key="thr", bind="query-params")
st.caption(f"{tables.caption(ctx.dataset, clip)} · onset {ann.onset} · {tables.apex_note(ctx.dataset, ann)} · offset {ann.offset} · "
           f"{len(frames.numbers)} frames on disk")

try:
    bar = st.progress(0.0, text="MTCNN on every frame…")
    track = ui.mtcnn_boxes(ctx, clip, progress=lambda done, total: bar.progress(done / total, text=f"MTCNN on frame {done} of {total}…"))
    with st.spinner("Aligning every frame to the apex crop…"):
        aligned = ui.alignment(ctx, clip)
    bar.empty()
    figure = ui.pair_figure(ctx, clip, a, b, threshold, track)
    with st.spinner("Measuring the motion of every frame…"):
        curve = ui.motion_curve(ctx, clip)
except ClipError as exc:
    st.error(str(exc))
    st.stop()

for title, images, fraction in (("Before: each frame cropped by its own MTCNN box", figure.before, figure.before_fraction),
                                 ("After: template-aligned to the apex crop", figure.after, figure.after_fraction)):
    st.markdown(f"**{title}** · {fraction:.1%} of pixels differ by ≥ {threshold}")
    for column, image, text in zip(st.columns(3), images, (f"frame {label(a)}", f"frame {label(b)}", "|A − B| ≥ threshold")):
        if image is None:
            column.info("MTCNN found no face on this frame.")
        else:
            column.image(image, caption=text, width=ctx.params.align.crop_size)
st.download_button("Download figure (PNG)", lambda: figure.png(a, b, threshold, clip, scale=figures.DOWNLOAD_SCALE),
                   file_name=f"alignment_{clip}_{a}_{b}.png", mime="image/png", icon=":material/download:", on_click="ignore")

left, right = st.columns([3, 2])
ui.chart(left, charts.jitter_chart(track, aligned, ann.onset, ann.apex), f"jitter_{clip}")
flagged = [int(n) for n in aligned.alignment.flagged(ctx.params.align)]
ui.chart(right, charts.score_chart(aligned, ctx.params.align, flagged), f"quality_{clip}")
if flagged:
    reasons = tables.flag_reasons(aligned.alignment, ctx.params.align)
    right.warning(f"{len(flagged)} frame(s) flagged (limits: score ≥ {ctx.params.align.min_score:g}, residual ≤ "
                  f"{ctx.params.align.max_residual:g} px):\n\n" + "\n".join(f"- frame {n}: {why}" for n, why in reasons[:12])
                  + (f"\n- … and {len(reasons) - 12} more (in the chart)" if len(reasons) > 12 else ""), icon=":material/flag:")
else:
    right.success(f"All {len(aligned.alignment.frames)} frames trusted: score ≥ {ctx.params.align.min_score:.2f} "
                  f"(lowest {aligned.alignment.min_score:.3f}), "
                  f"residual ≤ {ctx.params.align.max_residual:.2f} px (highest {aligned.alignment.max_residual:.3f}).", icon=":material/check_circle:")
if aligned.warnings:
    right.info(" · ".join(aligned.warnings))

spotted = ann.apex if ann.apex_source == "spotted" else None
annotated = tables.annotated_clip(ctx.dataset, clip)
ui.chart(st, charts.motion_chart(curve, ann.onset, ann.offset, apex=annotated.apex if annotated else None, spotted=spotted),
         f"motion_{clip}")
st.caption("Motion of each aligned frame from the onset frame (Farnebäck flow at 112 px, head motion removed, mean of the top 10 % of "
           "the magnitude inside the face): the measure an apex is spotted with, at the peak of its 3-frame average. "
           + ("" if spotted is not None else "The apex policy *spot* in the sidebar spots every clip's apex."))
