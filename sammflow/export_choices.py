"""What the dashboard's export page offers for a folder: the job's own plan, run dry, in words.

``export_plan`` runs ``sammflow.outfolder.OutputFolder.preview`` (the planning the export job
itself does, without locking, writing or removing anything) and says what an export would do
there: write into a new folder, resume an earlier export of the same parameters, or replace
one made with other parameters (naming the files that would go). ``page_message`` rewords the
command line's advice ("--force") for the page; ``scheduler_choice`` reads the page's Dask
scheduler field. No Streamlit here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sammflow.access import allowed_path, export_folder
from sammflow.annotations import ClipAnnotation
from sammflow.cluster import Scheduler
from sammflow.dataset import Dataset, InputError
from sammflow.export import sources_of
from sammflow.manifest import annotated_in_order
from sammflow.outfolder import OutputFolder
from sammflow.params import PipelineParams
from sammflow.workers import available_cores


# ---------------------------------------------------------------- what an export would do in a folder

#: The command line's advice in a refusal (``sammflow.manifest.plan``), and the page's wording of it.
_CLI_ADVICE = "; use a new output folder, or --force to replace its outputs"
_PAGE_ADVICE = ". Choose *Replace* to delete its outputs and export, or another output folder."


def page_message(text: str) -> str:
    """A job's refusal, worded for the dashboard: no command-line flag the page does not have.

    Parameters
    ----------
    text : str
        An ``InputError``'s message (``"OUT: made with other parameters (...); use a new output
        folder, or --force to replace its outputs"``).

    Returns
    -------
    str
        The same message, pointing at the page's *Replace* choice instead of ``--force``.
    """
    text = text.replace(_CLI_ADVICE, _PAGE_ADVICE)
    return text.replace("--force", "the *Replace* choice")


#: The page's label of its Dask scheduler field, as messages name it.
SCHEDULER_LABEL = "Dask scheduler"


def scheduler_choice(text: str) -> Scheduler | None:
    """The page's *Dask scheduler* field: ``None`` when empty (local processes), else the cluster
    to export on (``Scheduler.parse``: an address, or ``local:N``). A local cluster may have one
    worker process per core of this machine at most: the dashboard's server is shared.

    Raises
    ------
    InputError
        One line naming the field, the value and the rule.
    """
    if not text.strip():
        return None
    return Scheduler.parse(text, name=SCHEDULER_LABEL, max_local=available_cores())


@dataclass(frozen=True)
class ExportPlan:
    """What a flow-map export would do in a folder, before it runs (``export_plan``).

    Attributes
    ----------
    out : Path
        The folder, resolved (it may not exist yet).
    state : {"new", "resume", "replace"}
        ``new``: nothing of sammflow's there (or an export of other parameters in which no clip
        finished, which the export replaces by itself); ``resume``: an export of the same
        parameters and input, whose finished clips are kept; ``replace``: finished outputs of
        other parameters or another input folder, which the export refuses unless told to
        replace them (``force``).
    clips : int
        Annotated clips the export computes or keeps (rejected annotation rows excluded).
    kept : int
        ``resume``: finished clips that stay (same annotation, outputs there).
    why : tuple of str
        ``replace``: what differs (``"made with other parameters (flow.winsize 15 → 21)"``).
    delete : tuple of str
        ``replace``: the files replacing deletes, relative to ``out``.
    """

    out: Path
    state: str
    clips: int
    kept: int = 0
    why: tuple[str, ...] = ()
    delete: tuple[str, ...] = ()

    @property
    def todo(self) -> int:
        return self.clips - self.kept

    def message(self) -> str:
        """What the folder holds and what each choice does, in a sentence or two (Markdown)."""
        if self.state == "new":
            if self.delete:
                return (f"`{self.out}` holds an unfinished export of other parameters (no clip finished); exporting "
                        f"replaces it and deletes its {_files(self.delete)}.")
            return f"`{self.out}` is {'empty' if self.out.is_dir() else 'new'}: the export writes {self.clips} flow maps there."
        if self.state == "resume":
            return (f"`{self.out}` holds an earlier export of these parameters: {self.kept} of {self.clips} clips are done. "
                    f"*Resume* keeps them and computes the other {self.todo}; *Start over* recomputes all {self.clips}.")
        return (f"`{self.out}` holds an export {'; '.join(self.why)}. *Replace* deletes its {_files(self.delete)}, "
                f"rewrites manifest.csv and params.json, keeps any other file (sammflow.log), and exports with the "
                f"current parameters. Or export to a new folder and keep it.")


def _files(paths: Sequence[str]) -> str:
    maps = [p for p in paths if p.endswith(".png")]
    other = [p for p in paths if not p.endswith(".png")]
    parts = []
    if maps:
        shown = ", ".join(f"`{p}`" for p in maps[:3]) + (f" and {len(maps) - 3} more" if len(maps) > 3 else "")
        parts.append(f"{len(maps)} flow map{'s' if len(maps) != 1 else ''} ({shown})")
    parts += [f"`{p}`" for p in other]
    return " and ".join([", ".join(parts[:-1]), parts[-1]] if len(parts) > 1 else parts) or "outputs (none found)"


def export_plan(dataset: Dataset, out_dir: str | Path, params: PipelineParams, *, arrays: bool = False) -> ExportPlan:
    """What ``sammflow.export.export_flows`` would do with ``out_dir``: the page's choices.

    Reads only the folder's ``params.json`` and ``manifest.csv`` and tests which output files
    exist; the folder is checked first (``export_folder``: allowed roots, outside the datasets,
    sammflow's own), so nothing outside the rules is read.

    Parameters
    ----------
    dataset : Dataset
        The open dataset.
    out_dir : str or Path
        As typed.
    params : PipelineParams
    arrays : bool
        The export also writes ``features.npz``: a finished clip without its arrays is not kept.

    Returns
    -------
    ExportPlan

    Raises
    ------
    InputError
        As ``export_folder``.
    """
    out = export_folder(dataset.roots, out_dir)
    items = annotated_in_order(dataset.annotations)
    clips = sum(isinstance(item, ClipAnnotation) for item in items)
    # the job's own planning (sammflow.outfolder), run dry: the page says what the export will do
    preview = OutputFolder(out, dataset, kind="flows", params=params, sources=sources_of(dataset), items=items, arrays=arrays).preview()
    if not preview.holds:
        return ExportPlan(out, "new", clips)
    if preview.why:
        delete = tuple(str(path.relative_to(out)) for path in preview.delete)
        return ExportPlan(out, "replace" if preview.refused else "new", clips, why=preview.why, delete=delete)
    return ExportPlan(out, "resume", clips, kept=preview.kept)


def new_folder(out: Path) -> Path | None:
    """A folder beside ``out`` for an export that keeps ``out`` as it is: ``out-2``, ``out-3`` …,
    the first that does not exist and lies in an allowed root (``None`` if none of 99 does)."""
    for n in range(2, 101):
        candidate = out.with_name(f"{out.name}-{n}")
        try:
            allowed_path(candidate, "Output folder")
        except InputError:
            return None
        if not candidate.exists():
            return candidate
    return None
