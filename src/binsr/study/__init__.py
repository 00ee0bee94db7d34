"""The binarization study: a grid of training runs, their evaluation, ``study.json`` and ``RESULTS.md``.

``binsr study STUDY.yaml`` (:func:`run_study`) expands a study file (:mod:`binsr.study.spec`) into runs,
trains each one (resumably) with :func:`binsr.train.train`, scores its final checkpoint with
:func:`binsr.evaluate.evaluate` and :func:`binsr.complexity.count_complexity`, records it in
``study.json`` and regenerates ``RESULTS.md`` (:func:`write_report`). :mod:`binsr.study.anatomy` splits the
gap of the shipped checkpoints over image regions (``docs/ANATOMY.md``). See ``docs/STUDY.md``.
"""

from binsr.study.report import load_results, write_report
from binsr.study.runner import run_study
from binsr.study.spec import RecordKey, Study, StudyRun, load_study

__all__ = ["RecordKey", "Study", "StudyRun", "load_results", "load_study", "run_study", "write_report"]
