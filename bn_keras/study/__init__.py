"""The BN study: the tutorial's experiment done right, and its extensions.

`experiments` (each study as data), `runner` (arms x seeds of cached runs),
`statistics` (mean ± std, per epoch, agreement of two arms), `evaluation`
(measurements of the trained networks), `plots`, `report` (`conduct(study)`
writes a study's report), and `tuning` (keras-tuner searches).
"""
