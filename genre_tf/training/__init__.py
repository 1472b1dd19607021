"""Training a run: phases and a resumable fit, refit, the frozen-boundary cache, multi-worker, the tuner."""
