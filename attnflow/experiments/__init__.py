"""Experiments on top of training: speed and FLOPs of a config (:mod:`.bench`, ``attnflow bench``),
paired comparisons of variants (:mod:`.compare`, ``attnflow compare``) and pictures of what the
attention layers of a checkpoint do (:mod:`.attention_maps`, ``attnflow attention``).

The submodules are imported where they are used (``attnflow.experiments.bench`` ...), so that
importing one does not import the others.
"""
