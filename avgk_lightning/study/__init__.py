"""Compare training methods over seeds and data settings: plan, train, save, and write the paired tables.

The ``avgk-compare`` console script runs a study from the command line (:mod:`avgk_lightning.study.cli`);
the parts are usable alone:

* :mod:`~avgk_lightning.study.records`: the typed records (a row, a job, a finished run, a saved study);
* :mod:`~avgk_lightning.study.plan`: the runs of a study and the key that says whether a saved run answers one;
* :mod:`~avgk_lightning.study.training`: each run trained and tested through ``train.py``'s CLI;
* :mod:`~avgk_lightning.study.journal`: the run journal a study resumes from;
* :mod:`~avgk_lightning.study.paired` and :mod:`~avgk_lightning.study.tables`: paired differences and Markdown.
"""

from avgk_lightning.study.plan import StudyPlan, depends_on_k
from avgk_lightning.study.records import Job, Row, RunRecord, SavedStudy
from avgk_lightning.study.tables import render

__all__ = ["Job", "Row", "RunRecord", "SavedStudy", "StudyPlan", "depends_on_k", "render"]
