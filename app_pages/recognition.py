"""Recognition check: a leave-one-subject-out baseline on one export's features.npz, or two side by side."""

import streamlit as st

from sammflow import access, charts, recognition, ui
from sammflow.features import FEATURES_FILE

ctx = ui.context()
st.title("Recognition check")
st.caption("Does this preprocessing help a model? A baseline trained with leave-one-subject-out folds on an export's "
           f"`{FEATURES_FILE}` (*Batch export* with features, or `sammflow export --arrays`): per held-out subject a fresh model, "
           "seeded from (seed, fold), trained for a fixed number of epochs on the other subjects only, no selection on a test "
           "fold. UF1 and UAR of all folds' predictions pooled, with a 95 % bootstrap interval over subjects; chance is 1 / "
           "classes. The same run as `sammflow evaluate`, which writes `evaluation.json` beside the file.")

default = str(access.default_out_dir(ctx.ref, ctx.params.hash) / FEATURES_FILE)
c1, c2 = st.columns(2)
a_text = c1.text_input("Export A: features.npz or its folder", value=default, key="recognition_a")
b_text = c2.text_input("Export B (optional): made with other parameters", key="recognition_b")
m1, m2, m3, m4 = st.columns([1.4, 1, 1, 1])
model = m1.selectbox("Model", list(recognition.MODELS), key="recognition_model",
                     format_func=lambda name: f"{recognition.MODELS[name].title} ({name})",
                     help="logreg: seconds; OFF-ApexNet (u, v) and STSTNet (u, v, strain) train on one CPU thread: "
                          "minutes on a few hundred clips.")
epochs = m2.number_input("Epochs" if model != "logreg" else "Iterations", 1, 10_000, recognition.MODELS[model].epochs,
                         key=f"recognition_epochs_{model}")
seed = m3.number_input("Seed", 0, 2**31 - 1, recognition.DEFAULT_SEED, key="recognition_seed")
m4.write("")
run = m4.button("Run", type="primary", icon=":material/play_arrow:", key="recognition_run")

exports = {"A": a_text.strip(), "B": b_text.strip()}
if run:
    results = {}
    bar = st.progress(0.0, text="Training…")
    for name, text in exports.items():
        if not text:
            continue
        try:
            path = access.allowed_path(text, f"Export {name}")
            results[name] = ui.evaluation(path, model, epochs, seed, progress=lambda done, total, label, name=name: bar.progress(
                done / total, text=f"Export {name}: {label} ({done} of {total})"))
        except (OSError, ValueError) as exc:  # outside the roots, missing, not a features file, nothing to evaluate
            bar.empty()
            st.error(f"Export {name}: {exc}", icon=":material/error:")
            st.stop()
    bar.empty()
    st.session_state["recognition_shown"] = results

shown = st.session_state.get("recognition_shown") or {}
if not shown:
    st.info("Choose an export (and optionally a second one), a model, and press *Run*.", icon=":material/info:")
    st.stop()

columns = st.columns(len(shown))
for column, (name, result) in zip(columns, shown.items()):
    overall = result.overall
    column.subheader(f"{name}: {result.model.title}")
    column.caption(f"`{result.data.source}`: {overall['clips']} clips, {overall['subjects']} subjects, "
                   f"{len(result.folds)} folds, params `{result.data.params.get('params_hash', '?')}`; {result.seconds:.1f} s")
    k1, k2 = column.columns(2)
    for place, metric in ((k1, "uf1"), (k2, "uar")):
        low, high = overall["interval"][metric]
        delta = None
        if name == "B" and "A" in shown:
            delta = f"{overall[metric] - shown['A'].overall[metric]:+.3f} vs A"
        place.metric(metric.upper(), f"{overall[metric]:.3f}", delta=delta, help=f"95 % bootstrap interval over subjects: {low:.2f}–{high:.2f}")
        place.caption(f"95 % CI {low:.2f}–{high:.2f}")
    per_dataset = result.per_dataset()
    if len(per_dataset) > 1:
        column.dataframe([{"dataset": d, "clips": s["clips"], "UF1": round(s["uf1"], 3), "UAR": round(s["uar"], 3)}
                          for d, s in per_dataset.items()], hide_index=True, width="stretch")
    ui.chart(column, charts.confusion_chart(overall["confusion"], result.data.classes, f"Confusion matrix, {name}"),
             f"confusion_{name}_{result.model.name}", key=f"confusion_{name}")
    column.dataframe([{"subject": s, "clips": v["clips"], "accuracy": round(v["accuracy"], 3)}
                      for s, v in result.per_subject().items()], hide_index=True, width="stretch", height=240)

if len(shown) == 2:
    st.subheader("What differs between A's and B's parameters")
    difference = recognition.params_difference(shown["A"].data.params, shown["B"].data.params)
    if difference:
        st.dataframe([{"parameter": p, "A": str(a), "B": str(b)} for p, a, b in difference], hide_index=True, width="stretch")
    else:
        st.caption("Nothing: both files were made with the same parameters.")
