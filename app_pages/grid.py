"""Normalized grid: one aligned frame of every clip (or subject), side by side."""

import streamlit as st

from sammflow import figures, ui

ctx = ui.context()
st.title("Normalized grid")
st.caption("Aligned crops at the same scale: faces should sit at the same place in every tile.")

c1, c2, c3 = st.columns([1.2, 1, 1.5])
which = c1.radio("Frame", ["first", "onset", "apex"], index=1, horizontal=True, key="frame", bind="query-params",
                 help="first: the first frame of the clip folder.")
per = c2.radio("One tile per", ["clip", "subject"], horizontal=True, key="per", bind="query-params")
columns = c3.slider("Columns", 2, 8, 5, key="cols", bind="query-params")

bar = st.empty()  # a progress bar while tiles are made (not when the grid is in memory)
grid = ui.grid(ctx, which, per, progress=lambda done, total, stage: bar.progress(
    done / max(total, 1), text=f"{stage}… {done} of {total} {per}s ready"))
bar.empty()

if not grid.tiles:
    st.warning("No clip could be aligned.")
for start in range(0, len(grid.tiles), columns):
    for column, (image, text) in zip(st.columns(columns), grid.tiles[start:start + columns]):
        column.image(image, caption=text, width="stretch")
for message in grid.failed:
    st.error(message)
if grid.tiles:
    # made on click (deferred), not on every rerun: a panel of every tile is the page's slowest part
    st.download_button("Download grid (PNG)", lambda: figures.png(figures.panel(grid.tiles, columns=columns, tile=160,
                                                                              title=f"Aligned {which} frame per {per}",
                                                                              scale=figures.DOWNLOAD_SCALE)),
                       file_name=f"grid_{which}_{per}.png", mime="image/png", icon=":material/download:", on_click="ignore")
