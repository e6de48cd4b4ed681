"""Training: the two-network trainer (:mod:`.trainer`), one stage end to end (:mod:`.stage`).

Around them: Keras callbacks (:mod:`.callbacks`), exact-resume checkpoints
(:mod:`.checkpoints`), the NaN/divergence guard (:mod:`.divergence`) and the run
directory's files and lock (:mod:`.run_dir`).
"""
