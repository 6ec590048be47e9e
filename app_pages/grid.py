"""Normalized grid: one aligned frame of every clip (or subject), side by side."""

import streamlit as st

from sammflow import figures, tables, ui
from sammflow.pipeline import ClipError

ctx = ui.context()
st.title("Normalized grid")
st.caption("Aligned crops at the same scale: faces should sit at the same place in every tile.")

c1, c2, c3 = st.columns([1.2, 1, 1.5])
which = c1.radio("Frame", ["first", "onset", "apex"], index=1, horizontal=True, key="frame", bind="query-params",
                 help="first: the first frame of the clip folder.")
per = c2.radio("One tile per", ["clip", "subject"], horizontal=True, key="per", bind="query-params")
columns = c3.slider("Columns", 2, 8, 5, key="cols", bind="query-params")

tiles, failed = [], []
bar = st.progress(0.0, text="Aligning…")
clips = tables.grid_clips(ctx.dataset, per)
for i, clip in enumerate(clips):
    try:
        number = tables.frame_number(ctx.dataset, clip, which, clip=ui.annotation(ctx, clip))  # a spotted apex where there is one
        tiles.append((ui.crops(ctx, clip, [number]).crops[number], f"{clip} · {which} {number}"))
    except ClipError as exc:
        failed.append(str(exc))
    bar.progress((i + 1) / max(len(clips), 1), text=f"Aligning {clip} ({i + 1} of {len(clips)})…")
bar.empty()

if not tiles:
    st.warning("No clip could be aligned.")
for start in range(0, len(tiles), columns):
    for column, (image, text) in zip(st.columns(columns), tiles[start:start + columns]):
        column.image(image, caption=text, width="stretch")
for message in failed:
    st.error(message)
if tiles:
    st.download_button("Download grid (PNG)", figures.png(figures.panel(tiles, columns=columns, tile=160, title=f"Aligned {which} frame per {per}")),
                       file_name=f"grid_{which}_{per}.png", mime="image/png", icon=":material/download:", on_click="ignore")
