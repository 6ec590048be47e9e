"""Flow samples: random onset→apex flow maps, and one clip large with arrows, the map's legend and
its u, v, strain and magnitude at crop resolution."""

import random

import streamlit as st

from sammflow import charts, figures, tables, ui
from sammflow.export import flow_map_name
from sammflow.pipeline import ClipError

ctx = ui.context()
METHODS = {"farneback": "Farnebäck", "tvl1": "TV-L1", "dis": "DIS"}
MAPS = {"hsv": "HSV-encoded: hue = direction, brightness = magnitude",
        "uvs": "red = u, green = v, blue = optical strain, each min-max normalised (the STSTNet / HTNet input)",
        "uv": "red = u, green = v, each min-max normalised, blue 0 (the OFF-ApexNet input)"}
st.title("Flow samples")
st.caption(f"{METHODS[ctx.params.flow.method]} flow between the aligned onset and apex crops; maps {MAPS[ctx.params.encode.channels]}. "
           "Flow and map parameters are in the sidebar; maps are recomputed from cached crops.")

table = tables.annotation_table(ctx.dataset)
ready = table[table["status"] == "ready"]
f1, f2, f3, f4 = st.columns([1, 1, 1, 0.6])
subjects = f1.multiselect("Subject", sorted(ready["subject"].unique()), key="subjects", bind="query-params", placeholder="all")
emotions = f2.multiselect("Emotion", sorted(ready["emotion"].unique()), key="emotions", bind="query-params", placeholder="all")
all_aus = sorted({au for text in ready["AUs"] for au in tables.aus_of(text)})
aus = f3.multiselect("Action unit (AU)", all_aus, key="aus", bind="query-params", placeholder="any")
if "seed" not in st.session_state:
    st.session_state["seed"] = 0
f4.number_input("Sample", min_value=0, key="seed", bind="query-params", help="Seed of the random sample.")
f4.button("Re-sample", key="resample", icon=":material/shuffle:", width="stretch",
          on_click=lambda: st.session_state.update(seed=random.randrange(1, 10_000)))

clips = tables.filter_clips(ctx.dataset, subjects, emotions, aus)
if not clips:
    st.warning("No clip matches the filters.")
    st.stop()
shown = tables.sample(clips, int(st.session_state["seed"]))
# the clip shown large is the sample's first unless the user picked one (its box, a tile's
# "Open large", or a link naming another clip): it follows a re-sample or a filter change
linked = ui.link_choice("clip", clips, "a ready clip of this dataset matching the filters")
if linked:
    st.session_state.update(clip=linked[0], _clip_picked=linked[0] != shown[0])
elif not st.session_state.get("_clip_picked") or st.session_state.get("clip") not in clips:
    st.session_state["_clip_picked"] = False
    if st.session_state.get("clip") != shown[0]:
        st.session_state["clip"] = shown[0]


def open_large(clip: str) -> None:
    st.session_state.update(clip=clip, _clip_picked=True)


st.subheader(f"{len(shown)} of {len(clips)} clips")
with st.spinner("Computing the flows…"):
    results = ui.flows(ctx, [*shown, st.session_state["clip"]])  # together: a slow method's pairs run in parallel
tiles = []
for start in range(0, len(shown), 3):
    for column, clip in zip(st.columns(3), shown[start:start + 3]):
        if isinstance(results[clip], ClipError):
            column.error(str(results[clip]))
        else:
            tiles.append((results[clip].map_rgb, tables.caption(ctx.dataset, clip)))
            column.image(figures.enlarge(tiles[-1][0], 196), caption=tiles[-1][1], width=196)
        column.button("Open large", key=f"large_{clip}", icon=":material/open_in_full:", on_click=open_large, args=(clip,),
                      type="tertiary", disabled=clip == st.session_state["clip"], help=f"Show {clip} large below, with arrows.")
if tiles:  # the PNGs of this page are made on click (deferred), not on every rerun
    st.download_button("Download samples (PNG)",
                       lambda: figures.png(figures.panel(tiles, columns=3, tile=168, title="Onset → apex flow maps",
                                                         scale=figures.DOWNLOAD_SCALE)),
                       file_name=f"flow_samples_{st.session_state['seed']}.png", mime="image/png", icon=":material/download:",
                       on_click="ignore", key="samples_png")

st.divider()
clip = st.selectbox("Clip shown large", clips, key="clip", bind="query-params", on_change=lambda: st.session_state.update(_clip_picked=True),
                    help="The first clip of the sample unless you pick one here or with a tile's *Open large*.")
a1, a2 = st.columns(2)
step = a1.slider("Arrow spacing (crop px)", 6, 32, 14, key="arrow_step", bind="query-params")
scale = a2.slider("Arrow length per px of flow", 1.0, 20.0, 4.0, step=0.5, key="arrow_scale", bind="query-params")
result = results[clip]  # the box's clip is the one passed to ui.flows above (st.session_state["clip"])
if isinstance(result, ClipError):
    st.error(str(result))
    st.stop()
ann = result.normalized.clip  # its apex spotted where the sidebar's apex policy says so
size = ctx.params.align.crop_size
drawing = {"params": ctx.params.encode, "tile": size, "arrow_step": step, "arrow_scale": scale}
figure = figures.flow_tiles(result, **drawing)
st.caption(f"{tables.caption(ctx.dataset, clip)} · onset {ann.onset} · {tables.apex_note(ctx.dataset, ann)}")
for column, (image, text) in zip(st.columns(4), figure):
    column.image(image, caption=text, width=size)
stats = figures.flow_stats(result, ctx.params.encode)
m1, m2, m3 = st.columns(3)
m1.metric("Mean flow (crop px)", f"{stats['mean']:.3f}")
m2.metric("99th percentile (crop px)", f"{stats['p99']:.3f}")
m3.metric("Dominant direction", f"{stats['direction']:.0f}°", help="0° = right, 90° = down, 180° = left, 270° = up.")
d1, d3, d2, _ = st.columns([1, 1, 1, 1])
d1.download_button("Download map (PNG)", lambda: figures.png(result.map_rgb), file_name=flow_map_name(ann), mime="image/png",
                   icon=":material/download:", on_click="ignore", key="map_raw",
                   help="The map itself, at its size (the export's file and name).")
d3.download_button("Download map for slides (PNG)", lambda: figures.map_png(result.map_rgb), file_name=figures.map_slide_name(flow_map_name(ann)),
                   mime="image/png", icon=":material/slideshow:", on_click="ignore", key="map_png",
                   help=f"The map enlarged to {figures.MAP_PNG_SIDE} px, each of its pixels a square.")
d2.download_button("Download figure (PNG)", lambda: figures.png(figures.panel(
                       figures.flow_tiles(result, **drawing, scale=figures.DOWNLOAD_SCALE), columns=4, tile=size,
                       title=tables.caption(ctx.dataset, clip), scale=figures.DOWNLOAD_SCALE)),
                   file_name=f"flow_{clip}.png", mime="image/png", icon=":material/download:", on_click="ignore", key="figure_png")

st.subheader("Flow channels (crop resolution)")
st.caption(f"The flow the map is made from, {size}×{size} crop px: u and v (px, + right / + down), optical strain (px per px, "
           "dimensionless) and magnitude (px). Colours span the 99th percentile of the face without its border; stronger values "
           "saturate, the hover shows them.")
for column, chart, name in zip(st.columns(4), charts.channel_charts(result.flow), ("u", "v", "strain", "magnitude")):
    ui.chart(column, chart, f"{name}_{clip}", key=f"channel_{name}")
