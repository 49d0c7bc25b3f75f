"""The experiment harness both quality tracks run on; a track (``benchmarks.quality``: MiniLM,
``benchmarks.llm``: SmolLM2) supplies only its data, its model loading, its fine-tune step and its scorer.

* ``merging``: a ``MergeSpec`` as a mergekit YAML, run by the ``mergekit-awd`` CLI in a subprocess;
* ``lambda_path``: θ(λ) = θ_base + λ·D from one merge at λ = 1;
* ``experiment``: ``Experiment``, the record cache keyed by configuration, split and code version
  (``merge_code_version``), validation sweeps along λ, the final CLI merge scored on test;
* ``grids``, ``selection``: a method's validation grid and the choice on it (never on test);
* ``scoring``, ``results``: normalized accuracy and the rows of a results file;
* ``runner``: a run's set-up, the references' scores, one row per method, the run's settings;
* ``finetune``: the seeded batch order, the AdamW loop and the cache of finished fine-tunes;
* ``report``, ``plots``: markdown tables (intervals included) and PNG plots the tracks' pages use;
* ``bootstrap``: paired bootstrap intervals of normalized scores; ``intervals``: a track's rows with them
  (every track keeps each test example's correctness, ``Experiment.correct_state``).
"""
