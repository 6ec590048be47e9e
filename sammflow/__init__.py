"""sammflow: micro-expression datasets (SAMM first) to aligned face crops, onset→apex
optical flow and the 28×28 flow maps that micro-expression models train on.

Data flows one way, one module per stage::

    annotations + fixes + labels + dataset (frames on disk)
        → detect (one MTCNN face box per clip, on the apex frame)
        → align  (every frame template-matched to the apex crop, resized)
        → spot   (the apex, where it is missing or asked for: peak facial motion)
        → flow   (Farnebäck, TV-L1 or DIS between aligned onset and apex; optical strain)
        → encode (HSV or u·v·strain flow map and arrays, resized to 28×28)
        → animate (onset→apex GIFs)

Above the stages, imports run one way::

    text, params                       printable text for any path; parameter declarations
    frames                             frame files decoded strictly (used by dataset)
    pipeline                           one clip through the stages: NormalizedClip, ClipFlow
    cache                              the on-disk store of apex boxes and aligned crops
    cluster_worker                     what runs on a Dask worker: one clip's task, the worker plugins
    files, manifest, outfolder, pool,  atomic files; rows and resume plan; the output folder; the worker
          workers                      processes (started early by the command line); clips run on them
    features                           features.npz: u, v, strain, X, labels, folds
    cluster                            the connection to a Dask cluster (--scheduler ADDRESS or local:N)
    export                             the batch jobs
    cli | access, tables, figures,     the command line | the dashboard: paths, tables, images,
          charts, export_choices, ui     charts, the export page's plan (Streamlit only in ui)

Nothing here imports Streamlit (that lives in ``sammflow.ui``) or torch (MTCNN runs on
OpenCV on CPU; ``sammflow.detect`` imports torch only for a GPU detector).
"""

__version__ = "0.1.0"
