"""Training: the one loop skeleton, joint training, domain add, the distributed helpers, evaluation reports."""
