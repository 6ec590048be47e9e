"""Onset→apex GIFs: the aligned animation of a clip beside its flow map."""

import streamlit as st

from sammflow import figures, tables, ui
from sammflow.params import GifParams
from sammflow.pipeline import ClipError

ctx = ui.context()
st.title("Onset → apex GIFs")
st.caption("Aligned crops animated from onset to apex (or offset), encoded at display size, beside the clip's flow map.")
clips = tables.ready_ids(ctx.dataset)
if not clips:
    st.warning("No clip has its onset and apex frames on disk.")
    st.stop()

ui.link_choice("gif_clips", clips, "a clip of this dataset with its onset and apex frames on disk")
chosen = st.multiselect("Clips", clips, default=clips[:2], max_selections=6, key="gif_clips", bind="query-params")
c1, c2, c3, c4 = st.columns(4)
fps = c1.slider("Speed (frames per second)", 1, 50, 10, key="fps", bind="query-params")
step = c2.slider("Frame step", 1, 10, 1, key="step", bind="query-params", help="Use every n-th frame (SAMM is 200 fps).")
size = c3.select_slider("Size (px)", [160, 224, 288, 320], value=224, key="gif_size", bind="query-params")
to_offset = c4.toggle("Continue to offset", key="offset", bind="query-params")
params = GifParams(fps=float(fps), step=step, to_offset=to_offset, size=size)

if not chosen:
    st.info("Choose one or more clips.")
for clip in chosen:
    ann = ctx.dataset.annotations.by_clip[clip]
    st.subheader(tables.caption(ctx.dataset, clip))
    try:
        with st.spinner(f"Aligning the frames of {clip}…"):
            data, count = ui.gif(ctx, clip, params)
            result = ui.flow(ctx, clip)
    except ClipError as exc:
        st.error(str(exc))
        continue
    left, right, info = st.columns([1, 1, 1.2])
    end = f"offset {ann.offset}" if to_offset else f"apex {ann.apex}"
    left.image(data, caption=f"{count} frames, onset {ann.onset} → {end}", width=size)
    right.image(figures.enlarge(result.map_rgb, size), caption="flow map (onset → apex)", width=size)
    info.download_button("Download GIF", data, file_name=f"sub{ann.subject}_{clip}.gif", mime="image/gif",
                         icon=":material/download:", on_click="ignore", key=f"gif_{clip}")
    info.download_button("Download map (PNG)", figures.png(result.map_rgb), file_name=f"sub{ann.subject}_{clip}.png", mime="image/png",
                         icon=":material/download:", on_click="ignore", key=f"map_{clip}")
    info.caption(f"{params.fps:g} fps · every {step} frame(s) · {size} px · {len(data) / 1024:.0f} KB")
