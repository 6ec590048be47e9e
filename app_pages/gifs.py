"""Onset→apex GIFs: the aligned animation of a clip beside its flow map; every GIF as one zip,
and a slide-ready figure per clip."""

import streamlit as st

from sammflow import figures, tables, ui
from sammflow.export import flow_map_name, gif_name
from sammflow.params import GifParams
from sammflow.pipeline import ClipError

ctx = ui.context()
st.title("Onset → apex GIFs")
st.caption("Aligned crops animated from onset to apex (or offset), encoded at display size, each frame labelled with its number "
           "and the onset / apex / offset markers, beside the clip's flow map.")
clips = tables.ready_ids(ctx.dataset)
if not clips:
    st.warning("No clip has its onset and apex frames on disk.")
    st.stop()

ui.link_choice("gif_clips", clips, "a clip of this dataset with its onset and apex frames on disk")
chosen = st.multiselect("Clips", clips, default=clips[:2], max_selections=6, key="gif_clips", bind="query-params")
c1, c2, c3, c4, c5 = st.columns(5)
fps = c1.slider("Speed (frames per second)", 1, 50, 10, key="fps", bind="query-params")
rate = ctx.fps
step = c2.slider("Frame step", 1, 10, 1, key="step", bind="query-params",
                 help="Use every n-th frame" + (f" (these clips are {rate:g} fps)." if rate else "."))
size = c3.select_slider("Size (px)", [160, 224, 288, 320], value=224, key="gif_size", bind="query-params")
to_offset = c4.toggle("Continue to offset", key="offset", bind="query-params")
labels = c5.toggle("Frame labels", value=True, key="gif_labels", bind="query-params",
                   help="Frame number top left; onset / apex / offset marker top right.")
params = GifParams(fps=float(fps), step=step, to_offset=to_offset, size=size, labels=labels)

if not chosen:
    st.info("Choose one or more clips.")
for clip in chosen:
    st.subheader(tables.caption(ctx.dataset, clip))
    try:
        with st.spinner(f"Aligning the frames of {clip}…"):
            data, count = ui.gif(ctx, clip, params)
            result = ui.flow(ctx, clip)
    except ClipError as exc:
        st.error(str(exc))
        continue
    ann = result.normalized.clip  # its apex spotted where the sidebar's apex policy says so
    left, right, info = st.columns([1, 1, 1.2])
    end = f"offset {ann.offset}" if to_offset else (f"apex {ann.apex}" + (" (spotted)" if ann.apex_source == "spotted" else ""))
    left.image(data, caption=f"{count} frames, onset {ann.onset} → {end}", width=size)
    right.image(figures.enlarge(result.map_rgb, size), caption="flow map (onset → apex)", width=size)
    info.download_button("Download GIF", data, file_name=gif_name(ann), mime="image/gif",
                         icon=":material/download:", on_click="ignore", key=f"gif_{clip}")
    # made on click (deferred); the loop's values bound as defaults, not read when the button is clicked
    info.download_button("Download map (PNG)", lambda result=result: figures.png(result.map_rgb), file_name=flow_map_name(ann),
                         mime="image/png", icon=":material/download:", on_click="ignore", key=f"map_raw_{clip}",
                         help="The map itself, at its size (the export's file and name).")
    info.download_button("Download map for slides (PNG)", lambda result=result: figures.map_png(result.map_rgb),
                         file_name=figures.map_slide_name(flow_map_name(ann)), mime="image/png", icon=":material/slideshow:",
                         on_click="ignore", key=f"map_{clip}", help=f"The map enlarged to {figures.MAP_PNG_SIDE} px, each of its pixels a square.")
    info.download_button("Download slide figure (PNG)", lambda result=result, title=tables.caption(ctx.dataset, clip): figures.png(
                             figures.clip_figure(result, params=ctx.params.encode, title=title, scale=figures.DOWNLOAD_SCALE)),
                         file_name=f"slide_{clip}.png", mime="image/png",
                         icon=":material/slideshow:", on_click="ignore", key=f"slide_{clip}",
                         help="Onset and apex (labelled stills), apex with flow arrows, flow map and colour legend side by side.")
    info.caption(f"{params.fps:g} fps · every {step} frame(s) · {size} px · {len(data) / 1024:.0f} KB")

st.divider()
st.subheader("All GIFs as one zip")
scope = st.radio("Clips", ["chosen", "all ready"], horizontal=True, key="zip_scope",
                 captions=[f"the {len(chosen)} above", f"{len(clips)} clips" + (f", the first {ui.MAX_ZIP_CLIPS}" if len(clips) > ui.MAX_ZIP_CLIPS else "")])
targets = chosen if scope == "chosen" else clips
st.caption(f"With the settings above. At most {ui.MAX_ZIP_CLIPS} clips and {ui.MAX_ZIP_BYTES // 2**20} MB per zip (each clip is aligned "
           "frame by frame); `sammflow gif DATA OUT` writes every clip's GIF.")
if st.button(f"Prepare zip of {min(len(targets), ui.MAX_ZIP_CLIPS)} GIFs", key="zip_prepare", icon=":material/folder_zip:",
             disabled=not targets):
    bar = st.progress(0.0, text="Starting…")
    made = ui.gif_zip(ctx, targets, params, progress=lambda done, total, clip: bar.progress(
        done / max(total, 1), text=f"GIF of {clip} ({done + 1} of {total})" if clip else "Done"))
    bar.empty()
    st.session_state["gif_zip"] = (made, params.hash, tuple(targets))
stored = st.session_state.get("gif_zip")
if stored is not None:
    made, made_hash, made_for = stored
    if made.included:
        outdated = "" if (made_hash, made_for) == (params.hash, tuple(targets)) else " (made with other clips or settings: prepare it again)"
        st.download_button(f"Download {len(made.included)} GIFs (zip, {len(made.data) / 2**20:.1f} MB){outdated}", made.data,
                           file_name="sammflow_gifs.zip", mime="application/zip", icon=":material/download:", on_click="ignore", key="zip_download")
    for message in made.failed:
        st.error(message)
    if made.left_out:
        st.warning(f"{len(made.left_out)} clip(s) not in the zip (the limit of {ui.MAX_ZIP_CLIPS} clips / {ui.MAX_ZIP_BYTES // 2**20} MB): "
                   + ", ".join(made.left_out[:10]) + (" …" if len(made.left_out) > 10 else ""))
