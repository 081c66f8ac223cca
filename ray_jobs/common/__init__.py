"""Ray glue shared by the entrypoints (argument parsing, Ray start-up, TorchTrainer fitting).

Entrypoints (``ray_jobs/<stage>.py``) import from here and from ``recsys``, never from each other
(``pipeline`` aside, which composes the stages)."""
